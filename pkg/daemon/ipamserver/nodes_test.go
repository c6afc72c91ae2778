package ipamserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// testNode is one simulated node: its registration, an allocator fenced
// to its epoch, and an ipamd server on its own socket.
type testNode struct {
	name string
	reg  *store.Registration
	srv  *Server
	cli  *ipamapi.Client
	stop context.CancelFunc // ends its keepalive
}

// startNode registers name and serves it. With alive its lease is kept
// alive until the test ends (or kill); otherwise the node is dead at once.
func startNode(t *testing.T, st *store.Store, name string, alive bool) *testNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg, err := st.RegisterNode(ctx, store.Node{Name: name, MachineID: "machine-" + name}, 30*time.Second)
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	n := &testNode{name: name, reg: reg, stop: cancel}
	if alive {
		ka, err := st.KeepAlive(ctx, reg.Lease)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for range ka {
			}
		}()
	}
	log := slog.New(slog.DiscardHandler)
	alloc, err := allocator.New(ctx, st.Fenced(name, reg.Node.Epoch), name, log)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "nodesrv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := Listen(filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	n.srv = New(alloc, st, log)
	go n.srv.Serve(l)
	t.Cleanup(func() { n.srv.Shutdown(context.Background()) })
	n.cli = ipamapi.NewClient(filepath.Join(dir, "s.sock"))
	if !alive {
		n.kill(t, st)
	}
	return n
}

// kill makes the node dead: its ipamd no longer holds the liveness lease.
func (n *testNode) kill(t *testing.T, st *store.Store) {
	t.Helper()
	n.stop()
	if err := st.Revoke(context.Background(), n.reg.Lease); err != nil {
		t.Fatal(err)
	}
}

// nodesNet is a pool of exactly two /121 blocks.
const nodesConf = `{"cniVersion":"1.1.0","name":"nodes","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8:5::/120","blockSize":121}]]}}`

func nodesAdd(cid string) *ipamapi.Request {
	return &ipamapi.Request{Network: "nodes", ContainerID: cid, IfName: "eth0", Config: []byte(nodesConf)}
}

func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func findNode(ns []ipamapi.NodeInfo, name string) *ipamapi.NodeInfo {
	for i := range ns {
		if ns[i].Name == name {
			return &ns[i]
		}
	}
	return nil
}

// TestNodesAndRemoveDeadNode: `nodes` lists the alive and the dead node
// with their counts; removing the dead node (110 attachments) frees its
// block for another node at once, deletes its handles, writes the
// tombstone; a second removal says it was removed already; the cluster's
// state is consistent after.
func TestNodesAndRemoveDeadNode(t *testing.T) {
	ctx := context.Background()
	st := store.New(etcdtest.Client(t))
	// b fills the first block with 110 attachments, then dies.
	b := startNode(t, st, "b", true)
	const pods = 110
	for i := range pods {
		if _, err := b.cli.Add(ctx, nodesAdd(fmt.Sprintf("b%03d", i))); err != nil {
			t.Fatalf("ADD on b: %v", err)
		}
	}
	b.kill(t, st)
	a := startNode(t, st, "a", true)
	if _, err := a.cli.Add(ctx, nodesAdd("a0")); err != nil {
		t.Fatal(err)
	}
	// Both blocks are taken: c cannot get an address.
	c := startNode(t, st, "c", true)
	if _, err := c.cli.Add(ctx, nodesAdd("c0")); cniCode(err) != types.ErrTryAgainLater {
		t.Fatalf("ADD on c with the pool's blocks taken: %v, want code 11", err)
	}

	ns, err := a.cli.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []ipamapi.NodeInfo{
		{Name: "a", State: ipamapi.NodeAlive, Epoch: a.reg.Node.Epoch, Blocks: 1, Attachments: 1, Local: true, MachineID: "machine-a"},
		{Name: "b", State: ipamapi.NodeDead, Epoch: b.reg.Node.Epoch, Blocks: 1, Attachments: pods, MachineID: "machine-b"},
		{Name: "c", State: ipamapi.NodeAlive, Epoch: c.reg.Node.Epoch, MachineID: "machine-c"},
	} {
		got := findNode(ns, want.Name)
		if got == nil {
			t.Fatalf("nodes = %+v: no %s", ns, want.Name)
		}
		if got.State != want.State || got.Epoch != want.Epoch || got.Blocks != want.Blocks || got.Attachments != want.Attachments ||
			got.Local != want.Local || got.MachineID != want.MachineID || got.LastSeen == "" || got.Started == "" || got.Removed != nil {
			t.Errorf("node %s = %+v, want %+v with last seen and started", want.Name, *got, want)
		}
	}
	if len(ns) != 3 {
		t.Errorf("nodes = %+v, want a, b, c", ns)
	}

	start := time.Now()
	rm, err := a.cli.RemoveNode(ctx, "b", false, "decommissioned")
	if err != nil {
		t.Fatalf("remove dead node b: %v", err)
	}
	t.Logf("node remove of a dead node with %d attachments and %d block(s): %s in ipamd, %s with the call on the socket",
		rm.Attachments, rm.Blocks, rm.Took, time.Since(start).Round(10*time.Microsecond))
	if rm.Node != "b" || rm.Epoch != b.reg.Node.Epoch || rm.Attachments != pods || rm.Blocks != 1 || rm.AlreadyRemoved || rm.WasAlive || rm.Forced ||
		rm.Revision == 0 || rm.TookSeconds <= 0 || !strings.Contains(rm.Message, "node b (epoch") || !strings.Contains(rm.Message, "released 110 attachment(s) and 1 block(s)") {
		t.Errorf("removal = %+v", rm)
	}
	// The block is free at once: c claims it.
	res, err := c.cli.Add(ctx, nodesAdd("c0"))
	if err != nil {
		t.Fatalf("ADD on c after b's removal: %v", err)
	}
	if got := res.IPs[0].Address.IP; !netip.MustParsePrefix("2001:db8:5::/121").Contains(netip.MustParseAddr(got.String())) {
		t.Errorf("c got %s, want an address of b's old block 2001:db8:5::/121", got)
	}
	if hs, err := st.HandlesAt(ctx, "b", 0); err != nil || len(hs) != 0 {
		t.Errorf("handles of b after removal: %d, %v; want none", len(hs), err)
	}
	if reg, err := st.NodeRegistration(ctx, "b"); err != nil || reg != nil {
		t.Errorf("registration of b after removal: %+v, %v", reg, err)
	}
	tomb, err := st.Tombstone(ctx, "b")
	if err != nil || tomb == nil {
		t.Fatalf("tombstone of b: %+v, %v", tomb, err)
	}
	if tomb.Epoch != b.reg.Node.Epoch || tomb.Attachments != pods || tomb.Blocks != 1 ||
		tomb.Reason != "ipamd node remove on node a: decommissioned" {
		t.Errorf("tombstone = %+v", tomb)
	}
	cons, err := c.cli.Consistency(ctx)
	if err != nil || len(cons.Problems) != 0 {
		t.Errorf("check after removal: %+v, %v", cons, err)
	}

	// Again: idempotent, and says so.
	again, err := c.cli.RemoveNode(ctx, "b", false, "")
	if err != nil {
		t.Fatalf("second removal of b: %v", err)
	}
	if !again.AlreadyRemoved || again.Attachments != 0 || again.Blocks != 0 || again.Epoch != b.reg.Node.Epoch ||
		!strings.Contains(again.Message, "node b was already removed at") || !strings.Contains(again.Message, "decommissioned") {
		t.Errorf("second removal = %+v", again)
	}
	ns, err = c.cli.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := findNode(ns, "b"); got == nil || got.State != ipamapi.NodeRemoved || got.Epoch != b.reg.Node.Epoch || got.Blocks != 0 ||
		got.Removed == nil || got.Removed.Attachments != pods || got.Removed.Reason != tomb.Reason {
		t.Errorf("b after removal = %+v", got)
	}
	if got := findNode(ns, "c"); got == nil || got.Blocks != 1 || got.Attachments != 1 || !got.Local {
		t.Errorf("c after its ADD (asked of c) = %+v", got)
	}
}

// TestNodeRemoveRefusals: what node remove refuses, with which code and
// message, and what --force does.
func TestNodeRemoveRefusals(t *testing.T) {
	ctx := context.Background()
	st := store.New(etcdtest.Client(t))
	a := startNode(t, st, "a", true)
	d := startNode(t, st, "d", true)
	if _, err := d.cli.Add(ctx, nodesAdd("d0")); err != nil {
		t.Fatal(err)
	}
	// A block of a name that never registered (a leftover).
	old := store.Block{CIDR: netip.MustParsePrefix("2001:db8:6::/121"), Node: "old", Network: "nodes",
		Subnet: netip.MustParsePrefix("2001:db8:6::/120"), Source: "pool", Claimed: time.Now().UTC()}
	if err := st.ClaimBlock(ctx, old); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, node string
		code       uint
		msg        []string
	}{
		{"alive", "d", types.ErrInvalidNetworkConfig, []string{"node d is alive", "last seen 20", "--force"}},
		{"local", "a", types.ErrInvalidNetworkConfig, []string{"a is this ipamd's own node", "--force"}},
		{"unknown", "ghost", types.ErrUnknownContainer, []string{"no node ghost", "not registered", "ipamd nodes"}},
		{"slash", "x/y", types.ErrInvalidNetworkConfig, []string{`node name "x/y"`}},
		{"space", "x y", types.ErrInvalidNetworkConfig, []string{`node name "x y"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.cli.RemoveNode(ctx, tc.node, false, "")
			if cniCode(err) != tc.code {
				t.Fatalf("remove %s: %v, want code %d", tc.node, err, tc.code)
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("remove %s: %q does not say %q", tc.node, err, m)
				}
			}
		})
	}
	// Nothing was removed by the refusals.
	for _, n := range []string{"a", "d"} {
		if reg, err := st.NodeRegistration(ctx, n); err != nil || reg == nil {
			t.Fatalf("registration of %s after refusals: %v, %v", n, reg, err)
		}
	}
	// The HTTP status of an unknown node is 404, of a refusal 400.
	for node, want := range map[string]int{"ghost": http.StatusNotFound, "d": http.StatusBadRequest} {
		w := httptest.NewRecorder()
		a.srv.Handler().ServeHTTP(w, httptest.NewRequest("POST", ipamapi.PathNodeRemove, bytes.NewReader([]byte(`{"node":"`+node+`"}`))))
		if w.Code != want {
			t.Errorf("remove %s: HTTP %d, want %d: %s", node, w.Code, want, w.Body)
		}
	}

	// --force removes the alive node d; its lease is revoked, so its
	// ipamd learns of it at once.
	rm, err := a.cli.RemoveNode(ctx, "d", true, "machine retired")
	if err != nil {
		t.Fatalf("forced removal of alive d: %v", err)
	}
	if !rm.WasAlive || !rm.Forced || rm.Attachments != 1 || rm.Blocks != 1 || !strings.Contains(rm.Message, "removed while alive (--force)") ||
		rm.Reason != "ipamd node remove on node a --force: machine retired" {
		t.Errorf("forced removal = %+v", rm)
	}
	alive, err := st.AliveNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, al := range alive {
		if al.Node == "d" {
			t.Errorf("d still alive after its removal: %+v", al)
		}
	}
	// The removed incarnation can take nothing any more.
	if _, err := d.cli.Add(ctx, nodesAdd("d1")); err == nil {
		t.Errorf("ADD on the removed node d succeeded")
	}

	// The leftover of a name that never registered: listed, released.
	ns, err := a.cli.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := findNode(ns, "old"); got == nil || got.State != ipamapi.NodeUnregistered || got.Blocks != 1 || got.Epoch != 0 {
		t.Errorf("old = %+v, want unregistered with 1 block", got)
	}
	rm, err = a.cli.RemoveNode(ctx, "old", false, "")
	if err != nil || rm.Blocks != 1 || !strings.Contains(rm.Message, "node old was not registered") {
		t.Errorf("remove old: %+v, %v", rm, err)
	}

	// The local node with --force.
	rm, err = a.cli.RemoveNode(ctx, "a", true, "")
	if err != nil || !rm.WasAlive || !rm.Forced {
		t.Errorf("forced removal of the local node: %+v, %v", rm, err)
	}
}

// TestNodeRemoveRacesADDs: a forced removal while the node's ipamd serves
// ADDs. Whatever order etcd puts them in, nothing of the node survives:
// its writes before the removal are swept, those after fail their epoch
// guard. The cluster's state is consistent after.
func TestNodeRemoveRacesADDs(t *testing.T) {
	ctx := context.Background()
	st := store.New(etcdtest.Client(t))
	a := startNode(t, st, "a", true)
	d := startNode(t, st, "d", true)
	conf := `{"cniVersion":"1.1.0","name":"race","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8:7::/112","blockSize":124}]]}}`
	var wg sync.WaitGroup
	var ok atomic.Int64
	stop := make(chan struct{})
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req := &ipamapi.Request{Network: "race", ContainerID: fmt.Sprintf("w%d-%d", w, i), IfName: "eth0", Config: []byte(conf)}
				if _, err := d.cli.Add(ctx, req); err == nil {
					ok.Add(1)
				}
			}
		}()
	}
	// Remove once the node holds something (several blocks of 16).
	for deadline := time.Now().Add(time.Minute); ok.Load() < 40; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			close(stop)
			wg.Wait()
			t.Fatalf("only %d ADDs on d succeeded in a minute", ok.Load())
		}
	}
	rm, err := a.cli.RemoveNode(ctx, "d", true, "race")
	if err != nil {
		t.Fatalf("forced removal during ADDs: %v", err)
	}
	// Let the ADDs run into the fence for a while.
	before := ok.Load()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d ADDs succeeded (%d after the removal returned); the removal released %d attachments and %d blocks",
		ok.Load(), ok.Load()-before, rm.Attachments, rm.Blocks)
	// Every ADD that succeeded wrote before the fence, so the removal
	// released it; none succeeded after.
	if n := ok.Load(); int64(rm.Attachments) < n {
		t.Errorf("%d ADDs succeeded, the removal released %d attachments", n, rm.Attachments)
	}
	if hs, err := st.HandlesAt(ctx, "d", 0); err != nil || len(hs) != 0 {
		t.Errorf("handles of d after its removal: %d, %v; want none", len(hs), err)
	}
	ns, err := a.cli.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := findNode(ns, "d"); got == nil || got.State != ipamapi.NodeRemoved || got.Blocks != 0 || got.Attachments != 0 {
		t.Errorf("d after its removal = %+v", got)
	}
	if cons, err := a.cli.Consistency(ctx); err != nil || len(cons.Problems) != 0 {
		t.Errorf("check after the removal: %+v, %v", cons, err)
	}
}

// TestNodeStatesAgree keeps the API's names of node states equal to the
// store's, which decides them (store.NodeInfo.State, store.CheckNodes).
func TestNodeStatesAgree(t *testing.T) {
	for api, st := range map[string]string{
		ipamapi.NodeAlive:        store.NodeAlive,
		ipamapi.NodeDead:         store.NodeDead,
		ipamapi.NodeRemoved:      store.NodeRemoved,
		ipamapi.NodeUnregistered: store.NodeUnregistered,
	} {
		if api != st {
			t.Errorf("ipamapi says %q where store says %q", api, st)
		}
	}
}
