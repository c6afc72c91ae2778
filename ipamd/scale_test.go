package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/checktest"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

const scaleSubnet = "2001:db8:7d::/48"

// scaleReq is an ADD on the shared network; /120 blocks make the nodes claim
// many blocks, so block claiming races for real.
func scaleReq(cid string) *ipamapi.Request {
	cfg := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"scale","ipam":{"type":"ipam-v6","ranges":[[{"subnet":%q,"blockSize":120}]]}}`, scaleSubnet)
	return &ipamapi.Request{Network: "scale", ContainerID: cid, IfName: "eth0", Config: []byte(cfg)}
}

// loadResult is what the runtimes (the test's workers) believe.
type loadResult struct {
	mu   sync.Mutex
	ok   map[string]string // container ID → address
	errs int
}

// drive sends n ADDs with the given concurrency, spread round-robin over
// the sockets.
func drive(sockets []string, prefix string, n, concurrency int, res *loadResult) {
	var wg sync.WaitGroup
	next := make(chan int)
	go func() {
		for i := range n {
			next <- i
		}
		close(next)
	}()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				cid := fmt.Sprintf("%s-%05d", prefix, i)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := ipamapi.NewClient(sockets[i%len(sockets)]).Add(ctx, scaleReq(cid))
				cancel()
				res.mu.Lock()
				if err != nil {
					res.errs++
				} else {
					res.ok[cid] = r.IPs[0].Address.IP.String()
				}
				res.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// checkCluster asserts the invariants over what etcd holds: no address
// twice, every block owned by one node, every address in a block of the
// node that holds its lease, and every successful ADD's address held by it.
func checkCluster(t *testing.T, socket string, res *loadResult) (leases []ipamapi.Lease) {
	t.Helper()
	ctx := context.Background()
	cli := ipamapi.NewClient(socket)
	st, err := cli.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leases, err = cli.Leases(ctx, "scale")
	if err != nil {
		t.Fatal(err)
	}
	holder := map[string]string{}
	blockOwner := map[string]string{}
	for _, n := range st.Networks {
		for _, b := range n.Blocks {
			if prev, dup := blockOwner[b.Block]; dup {
				t.Errorf("block %s listed for %s and %s", b.Block, prev, b.Node)
			}
			blockOwner[b.Block] = b.Node
			for _, a := range b.Addrs {
				if prev, dup := holder[a.Addr]; dup {
					t.Errorf("address %s held twice (%s, %s)", a.Addr, prev, a.ContainerID)
				}
				holder[a.Addr] = a.ContainerID
			}
		}
	}
	leaseAddrs := 0
	for _, l := range leases {
		for _, a := range l.Addrs {
			leaseAddrs++
			addr := strings.Split(a, "/")[0]
			if holder[addr] != l.ContainerID {
				t.Errorf("lease %s: address %s held by %q", l.ContainerID, addr, holder[addr])
			}
			block := strings.TrimSuffix(a, "/120")
			_ = block
		}
	}
	if leaseAddrs != len(holder) {
		t.Errorf("%d addresses in leases, %d held in blocks", leaseAddrs, len(holder))
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	for cid, addr := range res.ok {
		if holder[addr] != cid {
			t.Errorf("ADD of %s returned %s, but etcd holds it for %q", cid, addr, holder[addr])
		}
	}
	return leases
}

// TestScaleThreeNodes: three ipamd processes on one etcd (Debian's
// etcd-server), thousands of concurrent ADDs spread over them.
func TestScaleThreeNodes(t *testing.T) {
	ms := startEtcdCluster(t, 1, nil)
	var sockets []string
	for i := range 3 {
		d := startIpamd(t, shortDir(t), "--etcd-endpoints", ms[0].clientURL, "--node-name", fmt.Sprintf("node%d", i))
		sockets = append(sockets, d.socket)
	}
	res := &loadResult{ok: map[string]string{}}
	start := time.Now()
	const n = 3000
	drive(sockets, "c", n, 32, res)
	t.Logf("%d ADDs over 3 nodes, 32 concurrent: %v (%d errors)", n, time.Since(start).Round(time.Millisecond), res.errs)
	if res.errs != 0 || len(res.ok) != n {
		t.Fatalf("%d of %d ADDs succeeded, %d errors", len(res.ok), n, res.errs)
	}
	leases := checkCluster(t, sockets[0], res)
	if len(leases) != n {
		t.Errorf("%d leases in etcd, want %d", len(leases), n)
	}
	checktest.AssertClean(t, ipamapi.NewClient(sockets[0]))
}

// TestKill9UnderLoad: an ipamd killed with SIGKILL in the middle of a load,
// restarted, several times: no duplicate, no address lost, and after a GC
// with the true list of valid attachments nothing has leaked.
func TestKill9UnderLoad(t *testing.T) {
	ms := startEtcdCluster(t, 1, nil)
	dirs := []string{shortDir(t), shortDir(t), shortDir(t)}
	daemons := make([]*daemon, 3)
	var sockets []string
	for i := range 3 {
		daemons[i] = startIpamd(t, dirs[i], "--etcd-endpoints", ms[0].clientURL, "--node-name", fmt.Sprintf("node%d", i))
		sockets = append(sockets, daemons[i].socket)
	}
	res := &loadResult{ok: map[string]string{}}
	for round := range 3 {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			drive(sockets, fmt.Sprintf("r%d", round), 600, 16, res)
		}()
		time.Sleep(150 * time.Millisecond)
		victim := round % 3
		daemons[victim].cmd.Process.Signal(syscall.SIGKILL)
		<-daemons[victim].done
		daemons[victim].done <- nil
		wg.Wait()
		daemons[victim] = startIpamd(t, dirs[victim], "--etcd-endpoints", ms[0].clientURL, "--node-name", fmt.Sprintf("node%d", victim))
	}
	t.Logf("%d ADDs succeeded, %d failed while an ipamd was down", len(res.ok), res.errs)
	checkCluster(t, sockets[0], res)

	// The runtime's GC: every attachment it knows of is valid; whatever an
	// interrupted ADD left behind is not.
	var valid []string
	for cid := range res.ok {
		valid = append(valid, fmt.Sprintf(`{"containerID":%q,"ifname":"eth0"}`, cid))
	}
	gcCfg := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"scale","ipam":{"type":"ipam-v6","ranges":[[{"subnet":%q,"blockSize":120}]]},"cni.dev/valid-attachments":[%s]}`,
		scaleSubnet, strings.Join(valid, ","))
	for _, s := range sockets {
		if err := ipamapi.NewClient(s).GC(context.Background(), &ipamapi.Request{Network: "scale", Config: []byte(gcCfg)}); err != nil {
			t.Fatalf("GC on %s: %v", s, err)
		}
	}
	leases := checkCluster(t, sockets[0], res)
	if len(leases) != len(res.ok) {
		t.Errorf("%d leases after GC, want exactly the %d successful ADDs", len(leases), len(res.ok))
	}
	checktest.AssertClean(t, ipamapi.NewClient(sockets[1]))
}
