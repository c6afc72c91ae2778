package nodes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/ipammetrics"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// secondClient is another etcd client of the same cluster: the "other
// ipamd" or operator acting on this node's records.
func secondClient(t *testing.T, cli *clientv3.Client) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: cli.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testConfig(st *store.Store, node string) Config {
	return Config{Store: st, Node: node, MachineID: "m-" + node, TTL: 5 * time.Second,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Log: quiet}
}

// eventually polls cond until it holds or a generous deadline passes (no
// timing assert: the machine is shared).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// running starts k.Run and stops it (and revokes the lease) at the end.
func running(t *testing.T, k *Keeper, h Hooks) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	go k.Run(ctx, h)
	t.Cleanup(func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = k.Stop(sctx)
	})
	return cancel
}

func scrape(t *testing.T, m *ipammetrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

func netConf(t *testing.T) *ipamconf.NetConf {
	t.Helper()
	c, err := ipamconf.Parse([]byte(`{"cniVersion":"1.1.0","name":"net1","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8::/48","blockSize":120}]]}}`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestLeaseLostReregisters: the lease is revoked from outside (an etcd
// outage longer than the TTL looks the same to the node): the keeper
// registers again by itself, adopting its registration (same epoch, the
// blocks stay), and counts it in its metrics.
func TestLeaseLostReregisters(t *testing.T) {
	cli := etcdtest.Client(t)
	st := store.New(cli)
	ctx := context.Background()
	k, err := Register(ctx, testConfig(st, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	epoch := k.Epoch()
	fst := st.Fenced("n1", epoch)
	alloc, err := allocator.New(ctx, fst, "n1", quiet)
	if err != nil {
		t.Fatal(err)
	}
	conf := netConf(t)
	if _, err := alloc.Add(ctx, allocator.Request{ID: store.AttachmentID{Network: "net1", ContainerID: "c1", IfName: "eth0"}, Conf: conf}); err != nil {
		t.Fatal(err)
	}
	m := ipammetrics.New(alloc)
	m.SetNode(k.Metrics(func() int { return len(alloc.Orphans().Handles) }))
	running(t, k, Hooks{Fenced: fst, Refused: alloc.FencedSignal()})

	other := secondClient(t, cli)
	lease := k.current().Lease
	if _, err := other.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	eventually(t, "re-registration", func() bool {
		s := k.State()
		return s.Registered && s.Reregistrations == 1
	})
	s := k.State()
	if s.Epoch != epoch || s.Fenced != 0 || k.current().Lease == lease {
		t.Fatalf("after the lease loss: %+v (lease %x, was %x), want epoch %d adopted with a new lease", s, k.current().Lease, lease, epoch)
	}
	alive, err := st.AliveNodes(ctx)
	if err != nil || len(alive) != 1 || alive[0].Epoch != epoch {
		t.Fatalf("liveness records = %+v, %v; want n1 epoch %d", alive, err, epoch)
	}
	if got := alloc.Blocks(); len(got) != 1 {
		t.Fatalf("blocks after adoption = %v, want the one block kept", got)
	}
	// Writes still land: the epoch did not change.
	if _, err := alloc.Add(ctx, allocator.Request{ID: store.AttachmentID{Network: "net1", ContainerID: "c2", IfName: "eth0"}, Conf: conf}); err != nil {
		t.Fatalf("ADD after re-registration: %v", err)
	}
	out := scrape(t, m)
	for _, want := range []string{
		`v6cni_ipamd_node_reregistrations_total{node="n1"} 1`,
		`v6cni_ipamd_node_registered{node="n1"} 1`,
		fmt.Sprintf(`v6cni_ipamd_node_epoch{node="n1"} %d`, epoch),
		`v6cni_ipamd_node_fenced_total{node="n1"} 0`,
		`v6cni_ipamd_node_orphaned_attachments{node="n1"} 0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestStopRevokes: a clean stop ends the liveness record at once.
func TestStopRevokes(t *testing.T) {
	cli := etcdtest.Client(t)
	st := store.New(cli)
	ctx := context.Background()
	k, err := Register(ctx, testConfig(st, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	go k.Run(rctx, Hooks{})
	cancel()
	if err := k.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	alive, err := st.AliveNodes(ctx)
	if err != nil || len(alive) != 0 {
		t.Fatalf("liveness records after stop = %+v, %v; want none", alive, err)
	}
	if n, err := st.NodeRegistration(ctx, "n1"); err != nil || n == nil {
		t.Fatalf("registration after stop = %v, %v; want it kept (dead, not removed)", n, err)
	}
}

// TestRemovedWhileRunning: the node is removed (--force) while its ipamd
// runs. The keeper sees it, the allocator drops the block, remembers the
// attachment as an orphan; STATUS says 50 with the reason; a new ADD gets
// an address of a block claimed under the new epoch; the orphan's DEL
// succeeds and releases nothing, and STATUS is clean again.
func TestRemovedWhileRunning(t *testing.T) {
	cli := etcdtest.Client(t)
	st := store.New(cli)
	ctx := context.Background()
	k, err := Register(ctx, testConfig(st, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	epoch := k.Epoch()
	fst := st.Fenced("n1", epoch)
	alloc, err := allocator.New(ctx, fst, "n1", quiet)
	if err != nil {
		t.Fatal(err)
	}
	conf := netConf(t)
	orphanID := store.AttachmentID{Network: "net1", ContainerID: "c1", IfName: "eth0"}
	first, err := alloc.Add(ctx, allocator.Request{ID: orphanID, Conf: conf, Args: ipamconf.Args{PodNamespace: "default", PodName: "web-1"}})
	if err != nil {
		t.Fatal(err)
	}
	oldBlock := alloc.Blocks()[0].CIDR
	var mu sync.Mutex
	var dropped []store.Block
	running(t, k, Hooks{Fenced: fst, Refused: alloc.FencedSignal(),
		OnLoss: func(ctx context.Context, loss allocator.Loss, epoch int64) error {
			d, err := alloc.Fence(ctx, loss, epoch, nil)
			mu.Lock()
			dropped = d
			mu.Unlock()
			return err
		}})

	admin := store.New(secondClient(t, cli))
	rm, err := admin.RemoveNode(ctx, "n1", "ipamd node remove --force")
	if err != nil {
		t.Fatal(err)
	}
	if rm.Attachments != 1 || rm.Blocks != 1 {
		t.Fatalf("removal released %+v, want 1 attachment and 1 block", rm)
	}
	eventually(t, "fencing", func() bool { s := k.State(); return s.Registered && s.Fenced == 1 })
	if s := k.State(); s.Epoch == epoch || fst.Epoch() != s.Epoch {
		t.Fatalf("after fencing: state %+v, fenced store epoch %d; want a new epoch (was %d) on both", s, fst.Epoch(), epoch)
	}
	mu.Lock()
	if len(dropped) != 1 || dropped[0].CIDR != oldBlock {
		t.Errorf("dropped %v, want [%s]", dropped, oldBlock)
	}
	mu.Unlock()
	if got := alloc.Blocks(); len(got) != 0 {
		t.Fatalf("blocks after fencing = %v, want none", got)
	}
	orph := alloc.Orphans()
	if len(orph.Handles) != 1 || orph.Handles[0].AttachmentID != orphanID || !strings.Contains(orph.Reason, "node n1 was removed at") {
		t.Fatalf("orphans = %+v", orph)
	}
	err = alloc.Status(ctx, conf)
	var ae *allocator.Error
	if !errors.As(err, &ae) || ae.Kind != allocator.KindUnavailable ||
		!strings.Contains(ae.Msg, "node n1 was removed at") || !strings.Contains(ae.Msg, "ipamd node remove --force") ||
		!strings.Contains(ae.Msg, "1 attachment(s) lost their addresses: delete and re-create these pods") ||
		!strings.Contains(ae.Details, "default/web-1") {
		t.Fatalf("STATUS = %v, want unavailable (CNI 50) naming the removal and the lost pod", err)
	}
	if err := alloc.Check(ctx, orphanID); !errors.Is(err, allocator.KindNotFound) || !strings.Contains(err.Error(), "were lost: node n1 was removed") {
		t.Fatalf("CHECK of the orphan = %v", err)
	}

	// A new ADD claims a block under the new epoch; the orphan's address
	// is not handed out again on this node.
	next, err := alloc.Add(ctx, allocator.Request{ID: store.AttachmentID{Network: "net1", ContainerID: "c2", IfName: "eth0"}, Conf: conf})
	if err != nil {
		t.Fatalf("ADD after fencing: %v", err)
	}
	if next.IPs[0].Address == first.IPs[0].Address {
		t.Fatalf("new ADD got the orphan's address %s", next.IPs[0].Address)
	}
	blocks, err := st.Blocks(ctx)
	if err != nil || len(blocks) != 1 || blocks[0].Node != "n1" || !blocks[0].CIDR.Contains(next.IPs[0].Address.Addr()) {
		t.Fatalf("blocks in etcd = %+v, %v", blocks, err)
	}
	snap, err := st.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := store.Check(snap); len(p) != 0 {
		t.Fatalf("store check after fencing: %v", p)
	}

	// The orphan's DEL: success, nothing released (its address belongs to
	// nobody now, or to someone else).
	h, err := alloc.Del(ctx, orphanID, 0)
	if err != nil || h != nil {
		t.Fatalf("DEL of the orphan = %v, %v; want nothing released, no error", h, err)
	}
	if len(alloc.Orphans().Handles) != 0 {
		t.Fatalf("orphans after DEL: %+v", alloc.Orphans())
	}
	if err := alloc.Status(ctx, conf); err != nil {
		t.Fatalf("STATUS after the orphan's DEL = %v", err)
	}
	if n, err := st.Handle(ctx, store.AttachmentID{Network: "net1", ContainerID: "c2", IfName: "eth0"}); err != nil || n == nil {
		t.Fatalf("the new attachment's handle = %v, %v", n, err)
	}
}

// TestRefusedWriteFences: the node was removed while nothing watched (the
// keeper not running yet): the next ADD is refused (ErrFenced, retried by
// the runtime: CNI 11), the keeper is signalled and, once running, fences
// and the ADD after it succeeds.
func TestRefusedWriteFences(t *testing.T) {
	cli := etcdtest.Client(t)
	st := store.New(cli)
	ctx := context.Background()
	k, err := Register(ctx, testConfig(st, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	fst := st.Fenced("n1", k.Epoch())
	alloc, err := allocator.New(ctx, fst, "n1", quiet)
	if err != nil {
		t.Fatal(err)
	}
	conf := netConf(t)
	if _, err := store.New(cli).RemoveNode(ctx, "n1", "test"); err != nil {
		t.Fatal(err)
	}
	_, err = alloc.Add(ctx, allocator.Request{ID: store.AttachmentID{Network: "net1", ContainerID: "c1", IfName: "eth0"}, Conf: conf})
	if !errors.Is(err, allocator.KindFenced) || !errors.Is(err, store.ErrFenced) {
		t.Fatalf("ADD of a removed node = %v, want fenced", err)
	}
	select {
	case <-alloc.FencedSignal():
	default:
		t.Fatal("no fenced signal after a refused write")
	}
	running(t, k, Hooks{Fenced: fst, Refused: alloc.FencedSignal(),
		OnLoss: func(ctx context.Context, loss allocator.Loss, epoch int64) error {
			_, err := alloc.Fence(ctx, loss, epoch, nil)
			return err
		}})
	eventually(t, "fencing", func() bool { s := k.State(); return s.Registered && s.Fenced == 1 })
	if _, err := alloc.Add(ctx, allocator.Request{ID: store.AttachmentID{Network: "net1", ContainerID: "c1", IfName: "eth0"}, Conf: conf}); err != nil {
		t.Fatalf("ADD after fencing: %v", err)
	}
	if err := alloc.Status(ctx, conf); err != nil {
		t.Fatalf("STATUS with nothing lost = %v", err)
	}
}

// TestReleaseDead: two ipamds with --dead-node-grace; a third node died
// (its lease ended, not seen since). Exactly one of them removes it, its
// block and attachment go back; the live nodes stay.
func TestReleaseDead(t *testing.T) {
	cli := etcdtest.Client(t)
	st := store.New(cli)
	ctx := context.Background()
	// The dead node: registered, held a block and an attachment, stopped
	// without a clean stop long ago (its lease revoked here).
	reg, err := st.RegisterNode(ctx, store.Node{Name: "dead", MachineID: "m-dead"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	deadAlloc, err := allocator.New(ctx, st.Fenced("dead", reg.Node.Epoch), "dead", quiet)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deadAlloc.Add(ctx, allocator.Request{ID: store.AttachmentID{Network: "net1", ContainerID: "c1", IfName: "eth0"}, Conf: netConf(t)}); err != nil {
		t.Fatal(err)
	}
	if err := st.Revoke(ctx, reg.Lease); err != nil {
		t.Fatal(err)
	}

	const grace = time.Second
	var keepers []*Keeper
	for _, name := range []string{"n1", "n2"} {
		c := secondClient(t, cli)
		cst := store.New(c)
		k, err := Register(ctx, testConfig(cst, name))
		if err != nil {
			t.Fatal(err)
		}
		cancel := running(t, k, Hooks{})
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); k.ReleaseDead(rctx, c, grace, 50*time.Millisecond) }()
		t.Cleanup(func() { rcancel(); <-done; cancel() })
		keepers = append(keepers, k)
	}
	eventually(t, "the dead node's removal", func() bool {
		n, err := st.NodeRegistration(ctx, "dead")
		return err == nil && n == nil
	})
	// Give the other a few scans to (wrongly) remove it again.
	time.Sleep(10 * 50 * time.Millisecond)
	if got := keepers[0].DeadRemoved() + keepers[1].DeadRemoved(); got != 1 {
		t.Fatalf("dead node removed %d times, want exactly once", got)
	}
	tomb, err := st.Tombstone(ctx, "dead")
	if err != nil || tomb == nil || tomb.Attachments != 1 || tomb.Blocks != 1 || !strings.Contains(tomb.Reason, "--dead-node-grace") {
		t.Fatalf("tombstone = %+v, %v", tomb, err)
	}
	for _, name := range []string{"n1", "n2"} {
		if n, err := st.NodeRegistration(ctx, name); err != nil || n == nil {
			t.Fatalf("live node %s: %v, %v; want kept", name, n, err)
		}
	}
	blocks, err := st.Blocks(ctx)
	if err != nil || len(blocks) != 0 {
		t.Fatalf("blocks = %v, %v; want the dead node's released", blocks, err)
	}
}

// TestNameTakenMeanwhile: the node was removed and another machine's
// ipamd registered the name before this one could: it keeps trying (with
// backoff), says it is not registered (STATUS 50 through the allocator),
// and registers once the name is free again, under a new epoch.
func TestNameTakenMeanwhile(t *testing.T) {
	cli := etcdtest.Client(t)
	st := store.New(cli)
	ctx := context.Background()
	k, err := Register(ctx, testConfig(st, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	epoch := k.Epoch()
	fst := st.Fenced("n1", epoch)
	alloc, err := allocator.New(ctx, fst, "n1", quiet)
	if err != nil {
		t.Fatal(err)
	}
	other := store.New(secondClient(t, cli))
	// Removal and the other machine's registration: the keeper finds the
	// name taken.
	if _, err := other.RemoveNode(ctx, "n1", "test"); err != nil {
		t.Fatal(err)
	}
	otherReg, err := other.RegisterNode(ctx, store.Node{Name: "n1", MachineID: "another-machine"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The keeper starts only now (as if cut off until then): its watch
	// from the registration's revision sees the removal.
	var mu sync.Mutex
	var told []string
	running(t, k, Hooks{Fenced: fst, Refused: alloc.FencedSignal(),
		Unregistered: func(why string) {
			alloc.SetUnregistered(why)
			mu.Lock()
			told = append(told, why)
			mu.Unlock()
		},
		OnLoss: func(ctx context.Context, loss allocator.Loss, epoch int64) error {
			_, err := alloc.Fence(ctx, loss, epoch, nil)
			return err
		}})

	eventually(t, "the keeper to say it is not registered", func() bool { return !k.State().Registered })
	err = alloc.Status(ctx, netConf(t))
	if !errors.Is(err, allocator.KindUnavailable) || !strings.Contains(err.Error(), "node n1 is not registered") {
		t.Fatalf("STATUS while not registered = %v", err)
	}
	// The other machine's ipamd stops: the name is free (its registration
	// stays, adopted by this machine; a new epoch for this ipamd).
	if err := other.Revoke(ctx, otherReg.Lease); err != nil {
		t.Fatal(err)
	}
	eventually(t, "registration", func() bool { s := k.State(); return s.Registered && s.Fenced == 1 })
	if k.Epoch() == epoch || fst.Epoch() != k.Epoch() {
		t.Fatalf("epoch after the name came free: %d (fenced store %d), was %d", k.Epoch(), fst.Epoch(), epoch)
	}
	if err := alloc.Status(ctx, netConf(t)); err != nil {
		t.Fatalf("STATUS once registered = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(told) != 2 || told[0] == "" || told[1] != "" {
		t.Fatalf("Unregistered calls = %q, want the reason then \"\"", told)
	}
}
