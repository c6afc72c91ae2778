package pdha

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/internal/testutil/checktest"
	"github.com/v6cni/v6cni/internal/testutil/netlab"
)

// The segment every node of a lab shares, and the layout of its
// delegation: the server delegates /56s, a network's slice is a /60
// (subnetId 0..15), each node claims /64 blocks in it.
const (
	segment      = "lab"
	delegatedLen = 56
	subnetLen    = 60
	// sharedNetwork: one pd-ipam network (subnetId 0) on every node, each
	// node claiming its /64s in the network's /60 (plan §2.4). False gives
	// each node's pods their own network, subnetId = node index.
	sharedNetwork = true
)

// podSubnet is the subnetId of node n's pods.
func podSubnet(n *netlab.Node) int {
	if sharedNetwork {
		return 0
	}
	return n.Index
}

// etcd keys of the segment (docs/design/pd-ha-renumbering.md §2.1).
var (
	electionPrefix = "/v6cni/election/pd/" + segment + "/"
	bindingKey     = "/v6cni/pdcluster/" + segment + "/binding"
)

// waitLong bounds waits for things that take seconds when all is well
// (elections, BGP, a Reply): the machine is shared, so only a stuck
// system fails them.
const waitLong = 60 * time.Second

// newLab starts a lab of n cluster-mode nodes with a delegating server of
// kind on the link. Graceful restart keeps a killed node's routes for 10 s
// at the router: long enough for its ipamd to come back.
func newLab(t *testing.T, kind netlab.DHCPKind, n int) *netlab.Lab {
	t.Helper()
	lab := netlab.New(t, netlab.Options{Nodes: n, DHCP: kind, RestartTime: 10,
		PD: netlab.ClusterPD(segment, delegatedLen, subnetLen)})
	t.Logf("lab %s up (%s, %d nodes): %s", lab.ID, kind, n, lab.Timings)
	return lab
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// binding is what the tests read of the segment's stored binding: the
// dhcp6pd.Binding fields plus the leader's name and election revision.
type binding struct {
	ClientDUID string    `json:"clientDUID"`
	IAID       uint32    `json:"iaid"`
	ReplyTime  time.Time `json:"replyTime"`
	Leader     string    `json:"leader"`
	LeaderRev  int64     `json:"leaderRev"`
	Prefixes   []struct {
		Prefix netip.Prefix `json:"prefix"`
	} `json:"prefixes"`
}

// prefix is the binding's one prefix (the tests delegate one).
func (b *binding) prefix() netip.Prefix {
	if b == nil || len(b.Prefixes) == 0 {
		return netip.Prefix{}
	}
	return b.Prefixes[0].Prefix
}

func parseBinding(v []byte) (*binding, error) {
	var b binding
	if err := json.Unmarshal(v, &b); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", bindingKey, err, v)
	}
	return &b, nil
}

// readBinding reads the stored binding (nil when there is none).
func readBinding(ctx context.Context, cli *clientv3.Client) (*binding, error) {
	r, err := cli.Get(ctx, bindingKey)
	if err != nil || len(r.Kvs) == 0 {
		return nil, err
	}
	return parseBinding(r.Kvs[0].Value)
}

// waitBinding waits until the stored binding holds a prefix and returns
// it.
func waitBinding(t *testing.T, ctx context.Context, lab *netlab.Lab) *binding {
	t.Helper()
	var b *binding
	var err error
	if !netlab.Poll(waitLong, 100*time.Millisecond, func() bool {
		b, err = readBinding(ctx, lab.Etcd.Client)
		return err == nil && b.prefix().IsValid()
	}) {
		t.Fatalf("no binding with a prefix at %s after %v (last %+v, %v)", bindingKey, waitLong, b, err)
	}
	return b
}

// candidate is one campaigning node: its election key and create
// revision.
type candidate struct {
	node, key string
	rev       int64
}

// candidates are the election's keys, leader (lowest create revision)
// first.
func candidates(ctx context.Context, cli *clientv3.Client) ([]candidate, error) {
	r, err := cli.Get(ctx, electionPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var cs []candidate
	for _, kv := range r.Kvs {
		cs = append(cs, candidate{node: string(kv.Value), key: string(kv.Key), rev: kv.CreateRevision})
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].rev < cs[j].rev })
	return cs, nil
}

// waitSettled waits until every running node campaigns and the stored
// binding was written by the election's leader, and returns the leader
// and the binding.
func waitSettled(t *testing.T, ctx context.Context, lab *netlab.Lab) (candidate, *binding) {
	t.Helper()
	var cs []candidate
	var b *binding
	running := 0
	for _, n := range lab.Nodes {
		if n.Running() {
			running++
		}
	}
	if !netlab.Poll(waitLong, 100*time.Millisecond, func() bool {
		var err error
		if cs, err = candidates(ctx, lab.Etcd.Client); err != nil || len(cs) != running {
			return false
		}
		b, err = readBinding(ctx, lab.Etcd.Client)
		return err == nil && b.prefix().IsValid() && b.Leader == cs[0].node
	}) {
		t.Fatalf("not settled after %v: candidates %+v (want %d), binding %+v", waitLong, cs, running, b)
	}
	return cs[0], b
}

func nodeByName(lab *netlab.Lab, name string) *netlab.Node {
	for _, n := range lab.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// addPods adds one pd-ipam pod on every node (retrying while a node has
// no prefix yet) and waits until the router routes each pod's /64 via its
// node.
func addPods(t *testing.T, ctx context.Context, lab *netlab.Lab) []*netlab.Pod {
	t.Helper()
	return addPodsMode(t, ctx, lab, "")
}

// routed reports whether the router's table m has a route covering the
// pod's address via the pod's node.
func routed(m map[netip.Prefix]netip.Addr, p *netlab.Pod) bool {
	for pfx, nh := range m {
		if pfx.Contains(p.Addr(6)) && nh == p.Node.Addr6 {
			return true
		}
	}
	return false
}

// tryAgain reports whether a CNI error is code 11 (no prefix yet).
func tryAgain(err error) bool {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code == types.ErrTryAgainLater
	}
	s := err.Error()
	return strings.Contains(s, `"code":11`) || strings.Contains(s, `"code": 11`) || strings.Contains(s, "waiting for a delegated prefix")
}

// requirePodsIntact asserts that every pod still has its address on eth0,
// passes CHECK and answers a ping from the router.
func requirePodsIntact(t *testing.T, ctx context.Context, lab *netlab.Lab, pods []*netlab.Pod) {
	t.Helper()
	for _, p := range pods {
		out, err := p.Exec(ctx, "ip", "-6", "-o", "addr", "show", "dev", "eth0")
		if err != nil {
			t.Errorf("pod %s: %v", p.ID, err)
			continue
		}
		if !strings.Contains(string(out), p.Addr(6).String()+"/") {
			t.Errorf("pod %s on %s lost its address %s:\n%s", p.ID, p.Node.Name, p.Addr(6), out)
		}
		if err := p.Check(ctx); err != nil {
			t.Errorf("CHECK %s: %v", p.ID, err)
		}
		if out, err := netlab.Exec(ctx, lab.Router.NS, "ping", "-n", "-c", "1", "-w", "5", p.Addr(6).String()); err != nil {
			t.Errorf("router → pod %s on %s (%s): %v\n%s", p.ID, p.Node.Name, p.Addr(6), err, out)
		}
	}
}

// requireClean runs `ipamd check` through every running node's ipamd.
func requireClean(t *testing.T, lab *netlab.Lab) {
	t.Helper()
	for _, n := range lab.Nodes {
		if n.Running() {
			checktest.AssertClean(t, n.Client)
		}
	}
}

// requireOneLease asserts that the server holds exactly one lease, prefix
// p, for the cluster's DUID/IAID (owner; empty: any).
func requireOneLease(t *testing.T, ctx context.Context, lab *netlab.Lab, p netip.Prefix, owner string) netlab.Lease6 {
	t.Helper()
	ls, err := lab.DHCP.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Prefix != p || (owner != "" && ls[0].Owner() != owner) {
		t.Fatalf("server %s leases %+v, want exactly one: %s for %s", lab.DHCP.Kind, ls, p, owner)
	}
	return ls[0]
}

// messages is the server's count of client messages.
func messages(t *testing.T, lab *netlab.Lab) map[string]uint64 {
	t.Helper()
	m, err := lab.DHCP.Messages()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// event is one etcd change the watcher saw, stamped on arrival.
type event struct {
	at    time.Time
	put   bool
	key   string
	value []byte
	rev   int64
}

// watcher records every change of the election keys and the binding key
// from the test's process, as they arrive.
type watcher struct {
	mu     sync.Mutex
	events []event
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func watch(t *testing.T, lab *netlab.Lab) *watcher {
	t.Helper()
	cli := lab.Etcd.Client
	r, err := cli.Get(context.Background(), bindingKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{cancel: cancel}
	for _, wc := range []clientv3.WatchChan{
		cli.Watch(ctx, electionPrefix, clientv3.WithPrefix(), clientv3.WithRev(r.Header.Revision+1)),
		cli.Watch(ctx, bindingKey, clientv3.WithRev(r.Header.Revision+1)),
	} {
		w.done.Add(1)
		go func() {
			defer w.done.Done()
			for resp := range wc {
				now := time.Now()
				w.mu.Lock()
				for _, ev := range resp.Events {
					w.events = append(w.events, event{at: now, put: ev.Type == mvccpb.PUT, key: string(ev.Kv.Key),
						value: slices.Clone(ev.Kv.Value), rev: ev.Kv.ModRevision})
				}
				w.mu.Unlock()
			}
		}()
	}
	t.Cleanup(w.stop)
	return w
}

func (w *watcher) stop() {
	w.cancel()
	w.done.Wait()
}

// since returns the events that arrived at or after t0, in arrival order.
func (w *watcher) since(t0 time.Time) []event {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []event
	for _, e := range w.events {
		if !e.at.Before(t0) {
			out = append(out, e)
		}
	}
	return out
}

// takeover is what the watcher saw of one change of leader after t0: the
// old leader's election key deleted, then the binding saved by another
// node with a newer Reply.
type takeover struct {
	deleted, saved time.Time
	newLeader      string
	binding        *binding
}

// waitTakeover waits until, after t0, oldKey was deleted and the binding
// was saved by a node other than oldLeader with a Reply newer than
// before.
func (w *watcher) waitTakeover(t *testing.T, t0 time.Time, oldKey, oldLeader string, before time.Time, timeout time.Duration) takeover {
	t.Helper()
	var to takeover
	var err error
	if !netlab.Poll(timeout, 20*time.Millisecond, func() bool {
		to = takeover{}
		for _, e := range w.since(t0) {
			switch {
			case !e.put && e.key == oldKey && to.deleted.IsZero():
				to.deleted = e.at
			case e.put && e.key == bindingKey && to.saved.IsZero():
				var b *binding
				if b, err = parseBinding(e.value); err != nil {
					return true
				}
				if b.Leader != oldLeader && b.ReplyTime.After(before) {
					to.saved, to.newLeader, to.binding = e.at, b.Leader, b
				}
			}
		}
		return !to.deleted.IsZero() && !to.saved.IsZero()
	}) || err != nil {
		t.Fatalf("no take-over within %v of the kill: %+v (%v); events: %s", timeout, to, err, w.dump(t0))
	}
	return to
}

func (w *watcher) dump(t0 time.Time) string {
	var sb strings.Builder
	for _, e := range w.since(t0) {
		fmt.Fprintf(&sb, "\n  +%v put=%t %s rev %d %s", e.at.Sub(t0).Round(time.Millisecond), e.put, e.key, e.rev, e.value)
	}
	return sb.String()
}

// pinger pings one address from the router every 100 ms, count times
// (`ping -c count -i 0.1`); it ends as soon as every echo was answered,
// at the latest 30 s after the last one should have gone out (a deadline
// that cuts the sending short would count the echo in flight as lost).
type pinger struct {
	dst  netip.Addr
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{}
}

func startPinger(t *testing.T, lab *netlab.Lab, dst netip.Addr, count int) *pinger {
	t.Helper()
	p := &pinger{dst: dst, done: make(chan struct{})}
	deadline := count/10 + 30
	p.cmd = exec.Command("ip", "netns", "exec", lab.Router.NS, "ping", "-n", "-q", "-i", "0.1",
		"-c", strconv.Itoa(count), "-w", strconv.Itoa(deadline), dst.String())
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// result waits for the pinger to end and returns echoes sent and lost.
func (p *pinger) result(t *testing.T) (sent, lost int) {
	t.Helper()
	<-p.done
	m := pingSummary.FindStringSubmatch(p.out.String())
	if m == nil {
		t.Fatalf("ping %s: no summary in %q", p.dst, p.out.String())
	}
	tx, _ := strconv.Atoi(m[1])
	rx, _ := strconv.Atoi(m[2])
	return tx, tx - rx
}

// stats are the median and the worst of a series of durations.
func stats(ds []time.Duration) (median, worst time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		median = s[n/2]
	} else {
		median = (s[n/2-1] + s[n/2]) / 2
	}
	return median, s[len(s)-1]
}

// metric sums the samples of metric name on node n whose labels contain
// every one of labels (`key="value"`), from its ipamd's /metrics; found is
// false when no sample matched.
func metric(t *testing.T, ctx context.Context, n *netlab.Node, name string, labels ...string) (sum float64, found bool) {
	t.Helper()
	out, err := n.Exec(ctx, "curl", "-sf", "http://[::1]:9655/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", n.Name, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		f := strings.Fields(line)
		if !ok || len(f) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metrics of %s: %q: %v", n.Name, line, err)
		}
		sum += v
		found = true
	}
	return sum, found
}
