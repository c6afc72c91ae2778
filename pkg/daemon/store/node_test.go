package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
)

func register(t *testing.T, s *Store, name, machine string) *Registration {
	t.Helper()
	r, err := s.RegisterNode(context.Background(), Node{Name: name, MachineID: machine}, 30*time.Second)
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return r
}

// TestRegisterNode: create, adopt by the same machine (same epoch), refuse
// another machine while alive, adopt once the liveness record is gone.
func TestRegisterNode(t *testing.T) {
	cli := etcdtest.Client(t)
	s := New(cli)
	ctx := context.Background()
	first := register(t, s, "n1", "m1")
	if first.Adopted || first.Node.Epoch == 0 {
		t.Fatalf("first registration: adopted %v epoch %d", first.Adopted, first.Node.Epoch)
	}
	reg, err := s.NodeRegistration(ctx, "n1")
	if err != nil || reg == nil || reg.Epoch != first.Node.Epoch {
		t.Fatalf("NodeRegistration = %+v, %v; want epoch %d", reg, err, first.Node.Epoch)
	}
	again := register(t, s, "n1", "m1")
	if !again.Adopted || again.Node.Epoch != first.Node.Epoch || !again.Node.Registered.Equal(first.Node.Registered) {
		t.Fatalf("restart on the same machine: %+v, want adoption of epoch %d", again, first.Node.Epoch)
	}
	_, err = s.RegisterNode(ctx, Node{Name: "n1", MachineID: "m2"}, 30*time.Second)
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.Machine != "m1" || !strings.Contains(err.Error(), "node name n1 is in use by a live ipamd on machine m1 since") ||
		!strings.Contains(err.Error(), "--node-name") {
		t.Fatalf("other machine, same name: %v", err)
	}
	// Another node name on the same machine is another node.
	if other := register(t, s, "n2", "m1"); other.Adopted || other.Node.Epoch == first.Node.Epoch {
		t.Fatalf("n2: %+v", other)
	}
	// The ipamd died: its lease expired (revoked here). The name is free.
	if _, err := cli.Revoke(ctx, again.Lease); err != nil {
		t.Fatal(err)
	}
	moved := register(t, s, "n1", "m2")
	if !moved.Adopted || moved.Node.Epoch != first.Node.Epoch {
		t.Fatalf("adopt a dead registration: %+v", moved)
	}
	alive, err := s.AliveNodes(ctx)
	if err != nil || len(alive) != 2 {
		t.Fatalf("AliveNodes = %+v, %v", alive, err)
	}
}

func testPool(t *testing.T, s *Store) {
	t.Helper()
	if _, err := s.RegisterPool(context.Background(), Pool{Network: "net", Definition: "d", Subnets: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}}); err != nil {
		t.Fatal(err)
	}
}

func testBlock(node string, i int) Block {
	return Block{CIDR: netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x::/64", i)), Node: node, Network: "net",
		Subnet: netip.MustParsePrefix("2001:db8::/32"), Source: "pool", Claimed: time.Now().UTC()}
}

func testHandle(node string, b Block, i int) Handle {
	a := b.CIDR.Addr().Next().Next()
	for range i {
		a = a.Next()
	}
	return Handle{AttachmentID: AttachmentID{"net", fmt.Sprintf("c%d", i), "eth0"}, Node: node, Pod: fmt.Sprintf("ns/p%d", i),
		IPs: []IP{{Address: netip.PrefixFrom(a, 64), Gateway: b.CIDR.Addr().Next(), Block: b.CIDR}}}
}

// TestFencing: every taking write of a removed node's incarnation fails
// with ErrFenced; other compare failures are not ErrFenced; the store
// follows a new epoch with SetEpoch.
func TestFencing(t *testing.T) {
	cli := etcdtest.Client(t)
	base := New(cli)
	ctx := context.Background()
	testPool(t, base)
	r := register(t, base, "x", "m")
	s := base.Fenced("x", r.Node.Epoch)
	b := testBlock("x", 1)
	if err := s.ClaimBlock(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := s.ClaimBlock(ctx, b); !errors.Is(err, ErrExists) || errors.Is(err, ErrFenced) {
		t.Fatalf("claim of a taken block: %v, want ErrExists only", err)
	}
	h := testHandle("x", b, 0)
	if err := s.Allocate(ctx, h); err != nil {
		t.Fatal(err)
	}
	var taken *AddrTakenError
	h2 := testHandle("x", b, 0)
	h2.ContainerID = "other"
	if err := s.Allocate(ctx, h2); !errors.As(err, &taken) {
		t.Fatalf("allocate of a taken address: %v, want *AddrTakenError", err)
	}
	if _, err := base.RemoveNode(ctx, "x", "test"); err != nil {
		t.Fatal(err)
	}
	h3 := testHandle("x", b, 1)
	for name, write := range map[string]func() error{
		"ClaimBlock":    func() error { return s.ClaimBlock(ctx, testBlock("x", 2)) },
		"Allocate":      func() error { return s.Allocate(ctx, h3) },
		"SavePD":        func() error { return s.SavePD(ctx, "x", 1, []byte("{}")) },
		"PutNetService": func() error { return s.PutNetService(ctx, NetService{Network: "net"}) },
		"Heartbeat":     func() error { return base.Heartbeat(ctx, r.Node) },
		// The removal released b; a fenced cache must not release it
		// again once another node may own it.
		"ReleaseBlock": func() error { return s.ReleaseBlock(ctx, testBlock("x", 2).CIDR) },
	} {
		if err := write(); !errors.Is(err, ErrFenced) {
			t.Errorf("%s after removal: %v, want ErrFenced", name, err)
		}
	}
	// Stick needs a handle: one written by an unfenced store (as if it
	// landed just before the removal).
	h4 := testHandle("x", testBlock("x", 3), 4)
	if err := base.Allocate(ctx, h4); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Stick(ctx, h4, time.Now().Add(time.Hour)); !errors.Is(err, ErrFenced) {
		t.Errorf("Stick after removal: %v, want ErrFenced", err)
	}
	// Registered again: a new epoch; the old one stays fenced.
	r2 := register(t, base, "x", "m")
	if r2.Adopted || r2.Node.Epoch == r.Node.Epoch {
		t.Fatalf("re-registration: %+v", r2)
	}
	if err := s.ClaimBlock(ctx, testBlock("x", 2)); !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "registered again") {
		t.Fatalf("claim with the old epoch: %v", err)
	}
	s.SetEpoch(r2.Node.Epoch)
	if err := s.ClaimBlock(ctx, testBlock("x", 2)); err != nil {
		t.Fatalf("claim with the new epoch: %v", err)
	}
	if err := base.Heartbeat(ctx, r2.Node); err != nil {
		t.Fatal(err)
	}
}

// nodeKeys lists every key under Prefix whose record names node (blocks,
// handles, addresses of its blocks, sticky records, PD bindings, its
// registration and liveness record).
func nodeKeys(t *testing.T, cli *clientv3.Client, node string) []string {
	t.Helper()
	snap, err := New(cli).Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range snap.Blocks {
		if b.Node == node {
			out = append(out, BlockKey(b.CIDR))
		}
		for a := range snap.Addrs {
			if b.Node == node && b.CIDR.Contains(a) {
				out = append(out, AddrKey(a))
			}
		}
	}
	for _, h := range snap.Handles {
		if h.Node == node {
			out = append(out, HandleKey(h.AttachmentID))
		}
	}
	for _, st := range snap.Stickies {
		if st.Node == node {
			out = append(out, StickyKey(st.Network, st.Pod, st.IfName))
		}
	}
	for _, q := range snap.Quarantines {
		if q.Node == node {
			out = append(out, QuarantineKey(q.IP.Address.Addr()))
		}
	}
	resp, err := cli.Get(context.Background(), pdPrefix+node+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key))
	}
	for _, k := range []string{NodeKey(node), AliveKey(node)} {
		if resp, err := cli.Get(context.Background(), k); err != nil || len(resp.Kvs) > 0 {
			out = append(out, k)
		}
	}
	return out
}

func checkClean(t *testing.T, s *Store) {
	t.Helper()
	snap, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if probs := Check(snap); len(probs) > 0 {
		t.Fatalf("check: %v", probs)
	}
}

// TestRemoveNode: a node with 110 attachments over two blocks, sticky
// records and a PD binding is released entirely, in batches; the other
// node keeps everything; a second removal says not registered.
func TestRemoveNode(t *testing.T) {
	cli := etcdtest.Client(t)
	base := New(cli)
	ctx := context.Background()
	testPool(t, base)
	for _, node := range []string{"x", "y"} {
		r := register(t, base, node, "m")
		s := base.Fenced(node, r.Node.Epoch)
		off := 0
		if node == "y" {
			off = 10
		}
		blocks := []Block{testBlock(node, off+1), testBlock(node, off+2)}
		for _, b := range blocks {
			if err := s.ClaimBlock(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 110 {
			h := testHandle(node, blocks[i%2], i)
			h.ContainerID = node + h.ContainerID
			if err := s.Allocate(ctx, h); err != nil {
				t.Fatal(err)
			}
			if i < 5 {
				if _, _, err := s.Stick(ctx, h, time.Now().Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
			}
			if i == 5 || i == 6 {
				if _, err := s.Quarantine(ctx, h, []netip.Addr{h.IPs[0].Address.Addr()}, "duplicate", time.Now().Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := s.SavePD(ctx, node, 7, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	checkClean(t, base)
	infos, err := base.NodeInfos(ctx)
	if err != nil || len(infos) != 2 || infos[0].Blocks != 2 || infos[0].Attachments != 103 || infos[0].Alive == nil || infos[0].Node == nil {
		t.Fatalf("NodeInfos = %+v, %v", infos, err)
	}
	rm, err := base.RemoveNode(ctx, "x", "ipamd node remove")
	if err != nil {
		t.Fatal(err)
	}
	if rm.Attachments != 103 || rm.Blocks != 2 || rm.Epoch == 0 || rm.Reason != "ipamd node remove" {
		t.Fatalf("removed %+v, want 103 attachments and 2 blocks", rm)
	}
	if left := nodeKeys(t, cli, "x"); len(left) > 0 {
		t.Fatalf("keys of x left: %v", left)
	}
	if left := nodeKeys(t, cli, "y"); len(left) != 2+110+103+5+2+1+2 {
		t.Fatalf("y has %d keys, want all of them", len(left))
	}
	checkClean(t, base)
	tomb, err := base.Tombstone(ctx, "x")
	if err != nil || tomb == nil || tomb.Attachments != 103 {
		t.Fatalf("tombstone %+v, %v", tomb, err)
	}
	if _, err := base.RemoveNode(ctx, "x", "again"); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("second removal: %v, want ErrNotRegistered", err)
	}
	if _, err := base.RemoveNode(ctx, "nobody", "test"); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("removal of an unknown node: %v, want ErrNotRegistered", err)
	}
}

// TestRemoveNodeInterrupted: the removal's first transaction landed, the
// sweep did not; running the removal again finishes it.
func TestRemoveNodeInterrupted(t *testing.T) {
	cli := etcdtest.Client(t)
	base := New(cli)
	ctx := context.Background()
	testPool(t, base)
	r := register(t, base, "x", "m")
	s := base.Fenced("x", r.Node.Epoch)
	b := testBlock("x", 1)
	if err := s.ClaimBlock(ctx, b); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.Allocate(ctx, testHandle("x", b, i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpDelete(NodeKey("x")), clientv3.OpDelete(AliveKey("x"))).Commit(); err != nil {
		t.Fatal(err)
	}
	rm, err := base.RemoveNode(ctx, "x", "finish")
	if err != nil || rm.Attachments != 3 || rm.Blocks != 1 {
		t.Fatalf("finishing removal: %+v, %v", rm, err)
	}
	if left := nodeKeys(t, cli, "x"); len(left) > 0 {
		t.Fatalf("keys of x left: %v", left)
	}
	checkClean(t, base)
}

// TestSweepKeepsNewEpoch: a sweep bounded by the node's new epoch leaves
// what the new incarnation took.
func TestSweepKeepsNewEpoch(t *testing.T) {
	cli := etcdtest.Client(t)
	base := New(cli)
	ctx := context.Background()
	testPool(t, base)
	r := register(t, base, "x", "m")
	s := base.Fenced("x", r.Node.Epoch)
	old := testBlock("x", 1)
	if err := s.ClaimBlock(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := s.Allocate(ctx, testHandle("x", old, 0)); err != nil {
		t.Fatal(err)
	}
	// Removed, and only the first transaction landed.
	if _, err := cli.Txn(ctx).Then(clientv3.OpDelete(NodeKey("x")), clientv3.OpDelete(AliveKey("x"))).Commit(); err != nil {
		t.Fatal(err)
	}
	r2 := register(t, base, "x", "m")
	s.SetEpoch(r2.Node.Epoch)
	nb := testBlock("x", 2)
	if err := s.ClaimBlock(ctx, nb); err != nil {
		t.Fatal(err)
	}
	nh := testHandle("x", nb, 1)
	nh.ContainerID = "new"
	if err := s.Allocate(ctx, nh); err != nil {
		t.Fatal(err)
	}
	atts, blocks, err := base.SweepNode(ctx, "x", r2.Node.Epoch)
	if err != nil || atts != 1 || blocks != 1 {
		t.Fatalf("SweepNode = %d, %d, %v; want 1, 1", atts, blocks, err)
	}
	left := nodeKeys(t, cli, "x")
	if len(left) != 5 { // new block, its address, its handle, registration, liveness
		t.Fatalf("after the sweep: %v", left)
	}
	checkClean(t, base)
}

// TestRemoveNodeRacesAllocations: allocations as x run while x is
// removed; afterwards no key of x remains: every write either landed
// before the removal (and was swept) or was fenced.
func TestRemoveNodeRacesAllocations(t *testing.T) {
	cli := etcdtest.Client(t)
	base := New(cli)
	ctx := context.Background()
	testPool(t, base)
	r := register(t, base, "x", "m")
	s := base.Fenced("x", r.Node.Epoch)
	var wg sync.WaitGroup
	var mu sync.Mutex
	fenced := 0
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				b := testBlock("x", 100*g+i+1)
				err := s.ClaimBlock(ctx, b)
				if err == nil {
					h := testHandle("x", b, 0)
					h.ContainerID = fmt.Sprintf("c%d-%d", g, i)
					err = s.Allocate(ctx, h)
				}
				if errors.Is(err, ErrFenced) {
					mu.Lock()
					fenced++
					mu.Unlock()
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	rm, err := base.RemoveNode(ctx, "x", "race")
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if fenced != 4 {
		t.Fatalf("%d of 4 writers saw ErrFenced", fenced)
	}
	if rm.Blocks == 0 {
		t.Fatal("the removal released no block: the writers never ran")
	}
	if left := nodeKeys(t, cli, "x"); len(left) > 0 {
		t.Fatalf("keys of x left after the race: %v", left)
	}
	checkClean(t, base)
}

// TestRemoveDeadNode: only a node that is registered, not alive and not
// seen within the grace is removed; a guard that fails (another leader)
// leaves it alone; the registration's revision lets a watch miss nothing.
func TestRemoveDeadNode(t *testing.T) {
	cli := etcdtest.Client(t)
	s := New(cli)
	ctx := context.Background()
	testPool(t, s)
	r := register(t, s, "d", "m")
	if r.Revision < r.Node.Epoch {
		t.Fatalf("registration revision %d before its epoch %d", r.Revision, r.Node.Epoch)
	}
	n, rev, err := s.NodeRegistrationAt(ctx, "d")
	if err != nil || n == nil || n.Epoch != r.Node.Epoch || rev < r.Revision {
		t.Fatalf("NodeRegistrationAt = %+v, %d, %v", n, rev, err)
	}
	if err := s.Fenced("d", r.Node.Epoch).ClaimBlock(ctx, testBlock("d", 1)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		setup func()
		grace time.Duration
		guard []clientv3.Cmp
		want  error
	}{
		{"alive", func() {}, 0, nil, ErrNotDead},
		{"seen within the grace", func() { s.Revoke(ctx, r.Lease) }, time.Hour, nil, ErrNotDead},
		{"guard fails", func() {}, 0, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("/v6cni/election/none"), ">", 0)}, ErrNotDead},
		{"dead", func() {}, 0, nil, nil},
		{"already removed", func() {}, 0, nil, ErrNotRegistered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.setup()
			rm, err := s.RemoveDeadNode(ctx, "d", tt.grace, "dead for a test", tt.guard...)
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("RemoveDeadNode = %+v, %v; want %v", rm, err, tt.want)
				}
				return
			}
			if err != nil || rm.Blocks != 1 || rm.Reason != "dead for a test" {
				t.Fatalf("RemoveDeadNode = %+v, %v", rm, err)
			}
		})
	}
	if n, _, err := s.NodeRegistrationAt(ctx, "d"); err != nil || n != nil {
		t.Fatalf("after removal: %+v, %v", n, err)
	}
	checkClean(t, s)
}
