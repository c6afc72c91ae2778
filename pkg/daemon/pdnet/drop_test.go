package pdnet

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/dhcp6pd"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

type heldPD struct {
	mu   sync.Mutex
	held []allocator.Delegated
}

func (h *heldPD) Interface() string { return "uplink0" }
func (h *heldPD) Delegated() []allocator.Delegated {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]allocator.Delegated(nil), h.held...)
}

// TestExpiredPrefixDropRetried: etcd fails in the middle of dropping an
// expired prefix's blocks. The blocks not released stay claimed and
// announced (they are still the node's), and the drop is retried until
// every block of the prefix is gone, from etcd and from the announcements.
func TestExpiredPrefixDropRetried(t *testing.T) {
	ctx := context.Background()
	// A client of a real etcd whose transactions fail once armed, after
	// allowing a number of them: etcd unreachable mid-drop.
	var allow, failing atomic.Int64
	failTxn := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method == "/etcdserverpb.KV/Txn" && failing.Load() == 1 && allow.Add(-1) < 0 {
			return errors.New("injected: etcd unreachable")
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	base := etcdtest.Client(t)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: base.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(failTxn)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	st := store.New(cli)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	alloc, err := allocator.New(ctx, st, "node1", log)
	if err != nil {
		t.Fatal(err)
	}
	prefix := netip.MustParsePrefix("2001:db8:ab00::/56")
	alloc.SetPD(&heldPD{held: []allocator.Delegated{{Prefix: prefix}}})
	for i, js := range []string{
		`{"cniVersion":"1.1.0","name":"pda","ipam":{"type":"pd-ipam","subnetId":1}}`,
		`{"cniVersion":"1.1.0","name":"pdb","ipam":{"type":"pd-ipam","subnetId":2}}`,
	} {
		c, err := ipamconf.Parse([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alloc.Add(ctx, allocator.Request{ID: store.AttachmentID{Network: c.Name, ContainerID: "c", IfName: "eth0"}, Conf: c}); err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
	}
	pdBlocks := func() (announced, inEtcd int) {
		for _, b := range alloc.Blocks() {
			if prefix.Overlaps(b.CIDR) {
				announced++
			}
		}
		all, err := st.Blocks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range all {
			if prefix.Overlaps(b.CIDR) {
				inEtcd++
			}
		}
		return
	}
	if a, e := pdBlocks(); a != 2 || e != 2 {
		t.Fatalf("before expiry: %d blocks announced, %d in etcd; want 2, 2", a, e)
	}

	d := &Delegation{iface: "uplink0", alloc: alloc, log: log, valid: map[netip.Prefix]bool{prefix: true}, retryEvery: 50 * time.Millisecond}
	// Per block: mark the attachment lost, release the block (2 txns);
	// the first block goes, then etcd fails.
	allow.Store(2)
	failing.Store(1)
	d.changed(dhcp6pd.Binding{}) // the prefix is no longer valid
	a, e := pdBlocks()
	if a != 1 || e != 1 {
		t.Fatalf("after a drop failing midway: %d blocks announced, %d in etcd; want 1, 1 (what was not released stays announced)", a, e)
	}
	failing.Store(0)
	linktest.Eventually(t, 10*time.Second, 50*time.Millisecond, "the expired prefix's blocks are gone", func() (bool, string) {
		a, e := pdBlocks()
		return a == 0 && e == 0, ""
	})
	snap, err := st.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range store.Check(snap) {
		t.Errorf("store.Check: %s", p)
	}
}
