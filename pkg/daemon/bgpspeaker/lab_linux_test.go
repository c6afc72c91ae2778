package bgpspeaker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/wait"
)

// The integration tests build, per test, a router netns and a speaker
// netns joined by a veth pair:
//
//	router netns (BIRD or gobgpd, AS 65000)      speaker netns (this package, AS 65001)
//	  r0: 2001:db8:ffff::1/64, 192.0.2.1/24  ──  s0: 2001:db8:ffff::2/64, 192.0.2.2/24
//
// The speaker runs in a child process (this test binary, re-executed in
// the netns by `ip netns exec`): GoBGP dials from goroutines on any OS
// thread, so the whole process must live in the netns; a child can also
// be killed to simulate a crash.

var (
	routerAddr  = netip.MustParseAddr("2001:db8:ffff::1")
	speakerAddr = netip.MustParseAddr("2001:db8:ffff::2")
	speakerV4   = netip.MustParseAddr("192.0.2.2")
	nsCounter   atomic.Int32
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) for network namespaces: run `sudo go test ./pkg/bgpspeaker/...`")
	}
}

func requireBinary(t *testing.T, name, debPkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found in PATH: install the Debian package %s (scripts/install-deps.sh)", name, debPkg)
	}
	return p
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newNetns creates a uniquely named network namespace with lo up and
// removes it when the test ends, passed or failed.
func newNetns(t *testing.T, role string) string {
	t.Helper()
	requireRoot(t)
	requireBinary(t, "ip", "iproute2")
	name := fmt.Sprintf("v6bgpt-%d-%d-%s", os.Getpid(), nsCounter.Add(1), role)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// topo is one router netns and one speaker netns joined by a veth.
type topo struct {
	router, speaker string
}

// newTopo builds the topology; extra IPv6 addresses for the speaker side
// (more speakers on one host) may be given.
func newTopo(t *testing.T, extraSpeakerAddrs ...netip.Addr) topo {
	t.Helper()
	tp := topo{router: newNetns(t, "r"), speaker: newNetns(t, "s")}
	run(t, "ip", "link", "add", "r0", "netns", tp.router, "type", "veth", "peer", "name", "s0", "netns", tp.speaker)
	run(t, "ip", "-n", tp.router, "addr", "add", routerAddr.String()+"/64", "dev", "r0", "nodad")
	run(t, "ip", "-n", tp.router, "addr", "add", "192.0.2.1/24", "dev", "r0")
	run(t, "ip", "-n", tp.speaker, "addr", "add", speakerAddr.String()+"/64", "dev", "s0", "nodad")
	for _, a := range extraSpeakerAddrs {
		run(t, "ip", "-n", tp.speaker, "addr", "add", a.String()+"/64", "dev", "s0", "nodad")
	}
	run(t, "ip", "-n", tp.speaker, "addr", "add", speakerV4.String()+"/24", "dev", "s0")
	run(t, "ip", "-n", tp.router, "link", "set", "r0", "up")
	run(t, "ip", "-n", tp.speaker, "link", "set", "s0", "up")
	return tp
}

// speakerConfig is the speaker side of the topology.
func speakerConfig(restartTime uint16, password string) Config {
	return Config{
		ASN:             65001,
		RouterID:        netip.MustParseAddr("10.255.0.2"),
		Peers:           []PeerConfig{{Address: routerAddr, ASN: 65000, Password: password}},
		NextHopIPv4:     speakerV4,
		Families:        []Family{IPv6Unicast, IPv4Unicast},
		GracefulRestart: GracefulRestartConfig{RestartTime: restartTime},
	}
}

// --- the speaker in a child process -------------------------------------

const (
	helperEnv       = "V6CNI_BGPSPEAKER_HELPER"
	helperConfigEnv = "V6CNI_BGPSPEAKER_CONFIG"
	helperRoutesEnv = "V6CNI_BGPSPEAKER_ROUTES"
	helperWarnEnv   = "V6CNI_BGPSPEAKER_WARN"
)

type helperRequest struct {
	Op     string  `json:"op"` // routes, peers, stop, withdraw
	Routes []Route `json:"routes,omitempty"`
}

type helperReply struct {
	Error string       `json:"error,omitempty"`
	Peers []PeerStatus `json:"peers,omitempty"`
}

// TestHelperSpeakerProcess is not a test: it is the body of the speaker
// child process and returns at once in a normal run.
func TestHelperSpeakerProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	os.Exit(helperMain())
}

func helperMain() int {
	logger := slogToStderr()
	var cfg Config
	if err := json.Unmarshal([]byte(os.Getenv(helperConfigEnv)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "helper: config:", err)
		return 2
	}
	var routes []Route
	if err := json.Unmarshal([]byte(os.Getenv(helperRoutesEnv)), &routes); err != nil {
		fmt.Fprintln(os.Stderr, "helper: routes:", err)
		return 2
	}
	if d, err := time.ParseDuration(os.Getenv(helperWarnEnv)); err == nil {
		notEstablishedWarning = d
	}
	enc := json.NewEncoder(os.Stdout)
	reply := func(r helperReply) { _ = enc.Encode(r) }

	ctx := context.Background()
	sp, err := New(cfg, logger)
	if err == nil {
		err = sp.Start(ctx, routes)
	}
	if err != nil {
		reply(helperReply{Error: err.Error()})
		return 1
	}
	reply(helperReply{})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var req helperRequest
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			reply(helperReply{Error: err.Error()})
			continue
		}
		switch req.Op {
		case "routes":
			if err := sp.SetRoutes(ctx, req.Routes); err != nil {
				reply(helperReply{Error: err.Error()})
			} else {
				reply(helperReply{})
			}
		case "peers":
			ps, err := sp.Peers(ctx)
			r := helperReply{Peers: ps}
			if err != nil {
				r.Error = err.Error()
			}
			reply(r)
		case "stop", "withdraw":
			stop := sp.Stop
			if req.Op == "withdraw" {
				stop = sp.StopAndWithdraw
			}
			if err := stop(ctx); err != nil {
				reply(helperReply{Error: err.Error()})
				return 1
			}
			reply(helperReply{})
			return 0
		default:
			reply(helperReply{Error: "unknown op " + req.Op})
		}
	}
	return 0 // parent gone: exit without Stop, like a crash
}

// lockedBuffer collects a child's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type speakerProc struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	stdin   *os.File
	replies chan helperReply
	stderr  *lockedBuffer
	exited  chan struct{}
}

// startSpeaker runs a Speaker in netns ns with cfg and initial routes and
// waits until Start returned.
func startSpeaker(t *testing.T, name, ns string, cfg Config, routes []Route, warn time.Duration) *speakerProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cj, _ := json.Marshal(cfg)
	rj, _ := json.Marshal(routes)
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "-test.run=^TestHelperSpeakerProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperConfigEnv+"="+string(cj),
		helperRoutesEnv+"="+string(rj), helperWarnEnv+"="+warn.String())
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &speakerProc{t: t, name: name, cmd: cmd, stdin: stdinW, replies: make(chan helperReply, 16),
		stderr: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdin = stdinR
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdinR.Close()
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r helperReply
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				r.Error = "bad reply: " + sc.Text()
			}
			p.replies <- r
		}
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("speaker %s (pid %d) stderr:\n%s", name, cmd.Process.Pid, p.stderr.String())
		}
	})
	if r := p.reply(); r.Error != "" {
		t.Fatalf("speaker %s: start: %s", name, r.Error)
	}
	return p
}

func (p *speakerProc) reply() helperReply {
	p.t.Helper()
	select {
	case r := <-p.replies:
		return r
	case <-p.exited:
		select {
		case r := <-p.replies:
			return r
		default:
		}
		p.t.Fatalf("speaker %s exited: %v\n%s", p.name, p.cmd.ProcessState, p.stderr.String())
	case <-time.After(30 * time.Second):
		p.t.Fatalf("speaker %s: no reply in 30 s", p.name)
	}
	return helperReply{}
}

func (p *speakerProc) call(req helperRequest) helperReply {
	p.t.Helper()
	b, _ := json.Marshal(req)
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		p.t.Fatalf("speaker %s: %v", p.name, err)
	}
	return p.reply()
}

func (p *speakerProc) setRoutes(routes ...Route) {
	p.t.Helper()
	if r := p.call(helperRequest{Op: "routes", Routes: routes}); r.Error != "" {
		p.t.Fatalf("speaker %s: SetRoutes: %s", p.name, r.Error)
	}
}

func (p *speakerProc) peers() []PeerStatus {
	p.t.Helper()
	r := p.call(helperRequest{Op: "peers"})
	if r.Error != "" {
		p.t.Fatalf("speaker %s: Peers: %s", p.name, r.Error)
	}
	return r.Peers
}

// stop asks for a planned stop (op "stop") or a withdrawing one and waits
// for the process to exit.
func (p *speakerProc) stop(op string) {
	p.t.Helper()
	if r := p.call(helperRequest{Op: op}); r.Error != "" {
		p.t.Fatalf("speaker %s: %s: %s", p.name, op, r.Error)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("speaker %s did not exit after %s", p.name, op)
	}
}

// kill is a crash: SIGKILL, no Stop. Only this child, by pid.
func (p *speakerProc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	p.stdin.Close()
	<-p.exited
}

// waitEstablished polls Peers until every peer is established.
func (p *speakerProc) waitEstablished(timeout time.Duration) []PeerStatus {
	p.t.Helper()
	var ps []PeerStatus
	ok := wait.Poll(timeout, 100*time.Millisecond, func() bool {
		ps = p.peers()
		for _, s := range ps {
			if !s.Established {
				return false
			}
		}
		return len(ps) > 0
	})
	if !ok {
		p.t.Fatalf("speaker %s: sessions not established after %s: %+v", p.name, timeout, ps)
	}
	return ps
}
