package critest

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"
)

// CNISetupTimes reads containerd's debug log and returns, per pod sandbox
// ID, the time from "begin cni setup" to its "cni result": the CNI ADD of
// the whole conflist as libcni ran it inside RunPodSandbox.
func CNISetupTimes(logPath string) (map[string]time.Duration, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, fmt.Errorf("containerd log: %w", err)
	}
	defer f.Close()
	begin := map[string]time.Time{}
	out := map[string]time.Duration{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		isBegin := strings.Contains(line, `msg="begin cni setup"`)
		isResult := strings.Contains(line, `msg="cni result: `)
		if !isBegin && !isResult {
			continue
		}
		ts, ok := field(line, "time")
		if !ok {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		id, ok := field(line, "podsandboxid")
		if !ok {
			continue
		}
		if isBegin {
			begin[id] = at
		} else if b, ok := begin[id]; ok {
			out[id] = at.Sub(b)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("containerd log: %w", err)
	}
	return out, nil
}

// field returns the value of key=value or key="value" in a logfmt line
// (values of the fields read here hold no escaped quotes).
func field(line, key string) (string, bool) {
	i := strings.Index(" "+line, " "+key+"=")
	if i < 0 {
		return "", false
	}
	v := line[i+len(key)+1:]
	if strings.HasPrefix(v, `"`) {
		end := strings.Index(v[1:], `"`)
		if end < 0 {
			return "", false
		}
		return v[1 : 1+end], true
	}
	if end := strings.IndexByte(v, ' '); end >= 0 {
		v = v[:end]
	}
	return v, true
}
