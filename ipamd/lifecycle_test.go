package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// TestNodeRemovedWhileServing: ipamd runs on an external etcd; its node is
// removed behind its back (as `ipamd node remove --force` does). ipamd
// fences itself: STATUS says 50 naming the removal, a new ADD gets an
// address (a block of the new epoch), the DEL of the lost attachment
// succeeds and STATUS is clean again. SIGTERM then ends the node's
// liveness at once and keeps its registration.
func TestNodeRemovedWhileServing(t *testing.T) {
	ms := startEtcdCluster(t, 1, nil)
	d := startIpamd(t, shortDir(t), "--etcd-endpoints", endpoints(ms))
	cli := ipamapi.NewClient(d.socket)
	ctx := context.Background()
	ecli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(endpoints(ms), ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer ecli.Close()
	st := store.New(ecli)

	first := addReq("life", "c1", "2001:db8:5a::/48")
	res1, err := cli.Add(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	before, err := st.NodeRegistration(ctx, "test-node")
	if err != nil || before == nil {
		t.Fatalf("registration: %v, %v", before, err)
	}
	if _, err := st.RemoveNode(ctx, "test-node", "removed by the test"); err != nil {
		t.Fatal(err)
	}
	var status error
	waitUntil(t, "STATUS 50 after the removal", func() bool {
		status = cli.Status(ctx, first)
		var te *types.Error
		return errors.As(status, &te) && te.Code == types.ErrPluginNotAvailable &&
			strings.Contains(te.Msg, "node test-node was removed at") && strings.Contains(te.Msg, "removed by the test") &&
			strings.Contains(te.Msg, "1 attachment(s) lost their addresses: delete and re-create these pods")
	})
	t.Logf("STATUS after the removal: %v", status)
	after, err := st.NodeRegistration(ctx, "test-node")
	if err != nil || after == nil || after.Epoch == before.Epoch {
		t.Fatalf("registration after fencing: %+v, %v; want a new epoch (was %d)", after, err, before.Epoch)
	}
	res2, err := cli.Add(ctx, addReq("life", "c2", "2001:db8:5a::/48"))
	if err != nil {
		t.Fatalf("ADD after fencing: %v", err)
	}
	if res2.IPs[0].Address.String() == res1.IPs[0].Address.String() {
		t.Fatalf("ADD after fencing got the lost attachment's address %s", res2.IPs[0].Address.String())
	}
	if err := cli.Del(ctx, first); err != nil {
		t.Fatalf("DEL of the lost attachment: %v", err)
	}
	if err := cli.Status(ctx, first); err != nil {
		t.Fatalf("STATUS after the DEL: %v", err)
	}
	if !strings.Contains(d.log.String(), "node was removed while running") {
		t.Errorf("the log does not say the node was removed:\n%s", d.log)
	}

	d.stop(t)
	alive, err := st.AliveNodes(ctx)
	if err != nil || len(alive) != 0 {
		t.Fatalf("liveness after SIGTERM = %+v, %v; want none (lease revoked)", alive, err)
	}
	if n, err := st.NodeRegistration(ctx, "test-node"); err != nil || n == nil || n.Epoch != after.Epoch {
		t.Fatalf("registration after SIGTERM = %+v, %v; want epoch %d kept", n, err, after.Epoch)
	}
}

// waitUntil polls cond until it holds or a generous deadline passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLeaseLostInEtcdOutage: etcd is down for longer than the node's TTL,
// so ipamd loses its lease; when etcd is back ipamd registers again by
// itself, adopting its registration (same epoch, its addresses kept), says
// so in its log and counts it in its metrics.
func TestLeaseLostInEtcdOutage(t *testing.T) {
	ms := startEtcdCluster(t, 1, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := l.Addr().String()
	l.Close()
	d := startIpamd(t, shortDir(t), "--etcd-endpoints", endpoints(ms), "--node-ttl", "2s", "--metrics-addr", maddr)
	cli := ipamapi.NewClient(d.socket)
	ctx := context.Background()
	res1, err := cli.Add(ctx, addReq("outage", "c1", "2001:db8:5b::/48"))
	if err != nil {
		t.Fatal(err)
	}
	ecli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(endpoints(ms), ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer ecli.Close()
	st := store.New(ecli)
	before, err := st.NodeRegistration(ctx, "test-node")
	if err != nil || before == nil {
		t.Fatalf("registration: %v, %v", before, err)
	}

	ms[0].kill()
	waitUntil(t, "the lease loss in the log", func() bool {
		return strings.Contains(d.log.String(), "node registration lost: registering again")
	})
	ms[0].start(t)
	waitUntil(t, "the re-registration", func() bool {
		return strings.Contains(d.log.String(), "node registered again: same epoch")
	})
	after, err := st.NodeRegistration(ctx, "test-node")
	if err != nil || after == nil || after.Epoch != before.Epoch {
		t.Fatalf("registration after the outage: %+v, %v; want epoch %d adopted", after, err, before.Epoch)
	}
	alive, err := st.AliveNodes(ctx)
	if err != nil || len(alive) != 1 || alive[0].Epoch != before.Epoch {
		t.Fatalf("liveness after the outage: %+v, %v", alive, err)
	}
	// The attachment kept its address; new ADDs work.
	again, err := cli.Add(ctx, addReq("outage", "c1", "2001:db8:5b::/48"))
	if err != nil || again.IPs[0].Address.String() != res1.IPs[0].Address.String() {
		t.Fatalf("repeated ADD after the outage: %v, %v; want %s", again, err, res1.IPs[0].Address.String())
	}
	if _, err := cli.Add(ctx, addReq("outage", "c2", "2001:db8:5b::/48")); err != nil {
		t.Fatalf("ADD after the outage: %v", err)
	}
	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`v6cni_ipamd_node_reregistrations_total{node="test-node"} 1`,
		`v6cni_ipamd_node_registered{node="test-node"} 1`,
		fmt.Sprintf(`v6cni_ipamd_node_epoch{node="test-node"} %d`, before.Epoch),
		`v6cni_ipamd_node_fenced_total{node="test-node"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
