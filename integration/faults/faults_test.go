package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/internal/testutil/clustertest"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// deadline is how long a runtime waits for one CNI call: each request must
// be answered within it, by success or by a CNI error.
const deadline = 10 * time.Second

// retryable are the codes that tell the runtime "try again later": 11
// (ipamd's answer when etcd does not answer) and 50 (what the plugins make
// of 11 and of an unreachable ipamd).
func retryable(code uint) bool {
	return code == types.ErrTryAgainLater || code == types.ErrPluginNotAvailable
}

// figures are the numbers of one scenario, printed as a table at the end.
type figures struct {
	mu      sync.Mutex
	faults  map[string]int
	reqs    int
	codes   map[uint]int
	slowest time.Duration
	slowOp  string
}

var (
	allMu  sync.Mutex
	all    = map[string]*figures{}
	tables []string
)

func newFigures(t *testing.T) *figures {
	f := &figures{faults: map[string]int{}, codes: map[uint]int{}}
	allMu.Lock()
	all[t.Name()] = f
	allMu.Unlock()
	t.Cleanup(func() { t.Logf("figures:\n%s", f.table(t.Name())) })
	return f
}

func (f *figures) fault(kind string) {
	f.mu.Lock()
	f.faults[kind]++
	f.mu.Unlock()
}

// record notes one request's outcome; code 0 is success.
func (f *figures) record(op string, code uint, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs++
	f.codes[code]++
	if d > f.slowest {
		f.slowest, f.slowOp = d, op
	}
}

func (f *figures) table(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	var kinds []string
	for k := range f.faults {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	fmt.Fprintf(&b, "  %-36s %s\n", "scenario", name)
	for _, k := range kinds {
		fmt.Fprintf(&b, "  %-36s %d\n", "faults "+k, f.faults[k])
	}
	fmt.Fprintf(&b, "  %-36s %d\n", "requests", f.reqs)
	var codes []uint
	for c := range f.codes {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool { return codes[i] < codes[j] })
	for _, c := range codes {
		fmt.Fprintf(&b, "  %-36s %d\n", fmt.Sprintf("code %d", c), f.codes[c])
	}
	fmt.Fprintf(&b, "  %-36s %s (%s)\n", "slowest answer", f.slowest.Round(time.Millisecond), f.slowOp)
	return b.String()
}

// netConf is the configuration of the scenarios' network.
func netConf(t *testing.T, name, subnet string) json.RawMessage {
	t.Helper()
	conf, err := json.Marshal(map[string]any{
		"cniVersion": "1.1.0", "name": name,
		"ipam": map[string]any{"type": "ipam-v6", "ranges": [][]map[string]any{{{"subnet": subnet, "blockSize": 120}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

// call makes one request with the runtime's deadline, records it, and
// returns its CNI code (0: success) and the error.
func call(f *figures, op string, fn func(ctx context.Context) error) (uint, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err := fn(ctx)
	d := time.Since(start)
	var code uint
	if err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			code = te.Code
		} else {
			code = types.ErrInternal // not a CNI error: the runtime could not read it
		}
	}
	f.record(op, code, d)
	return code, d, err
}

// checkClean fails the test when the key space has a broken invariant or
// holds any address of the network.
func checkClean(t *testing.T, c *clustertest.Cluster, network string, wantAddrs int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	probs, snap, err := c.Check(ctx)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if len(probs) != 0 {
		t.Errorf("key space inconsistent: %v", probs)
	}
	n := 0
	for _, id := range snap.Addrs {
		if id.Network == network {
			n++
		}
	}
	if n != wantAddrs {
		t.Errorf("%d addresses held in %s, want %d: %v", n, network, wantAddrs, snap.Addrs)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("fault scenarios need root (they start real etcd and ipamd processes); run make test as root")
	}
}

func request(network, cid string, conf json.RawMessage) *ipamapi.Request {
	return &ipamapi.Request{Network: network, ContainerID: cid, IfName: "eth0", Config: conf}
}
