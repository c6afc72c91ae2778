package netlab

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// EtcdBin is Debian's etcd-server.
const EtcdBin = "/usr/bin/etcd"

// Etcd is the lab's etcd: one member of Debian's etcd in its own netns on
// the link. One member, not three: the lab is about routing, and etcd's
// quorum behaviour is what internal/testutil/clustertest and the fault
// tests exercise with three members; on a 2-core machine one member starts
// in well under a second and leaves the CPU to the nodes.
type Etcd struct {
	// NS is its netns, Addr its address on the link.
	NS   string
	Addr netip.Addr
	// Endpoint is the client URL the nodes use (on the link).
	Endpoint string
	// Client reaches the member from the test process through a unix
	// socket (the link is not reachable from the host's netns).
	Client  *clientv3.Client
	logPath string
	p       *proc
}

func (l *Lab) startEtcd() *Etcd {
	l.t.Helper()
	e := &Etcd{NS: l.newNetns("etcd"), Addr: l.linkAddr6(hostEtcd), logPath: filepath.Join(l.Dir, "etcd.log")}
	if err := l.attach(e.NS, "etcd", e.Addr); err != nil {
		l.t.Fatal(err)
	}
	e.Endpoint = fmt.Sprintf("http://[%s]:2379", e.Addr)
	peer := fmt.Sprintf("http://[%s]:2380", e.Addr)
	// etcd 3.4 takes a unix URL's host:port as the socket's file name,
	// relative to its working directory (the lab's Dir).
	const sockName = "etcd.sock:0"
	sock := filepath.Join(l.Dir, sockName)
	var err error
	e.p, err = startIn(e.NS, e.logPath, l.Dir, EtcdBin,
		"--name", "m0", "--data-dir", filepath.Join(l.Dir, "etcd"),
		"--listen-client-urls", e.Endpoint+",unix://"+sockName, "--advertise-client-urls", e.Endpoint,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "m0="+peer, "--initial-cluster-state", "new",
		"--initial-cluster-token", "netlab-"+l.ID)
	if err != nil {
		l.t.Fatal(err)
	}
	e.Client, err = clientv3.New(clientv3.Config{
		Endpoints:   []string{"unix://" + sock},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		l.t.Fatalf("etcd client: %v", err)
	}
	if !Poll(30*time.Second, 50*time.Millisecond, func() bool {
		if e.p.exited() {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := e.Client.Get(ctx, "health")
		return err == nil
	}) || e.p.exited() {
		l.t.Fatalf("etcd in %s not serving after 30s:\n%s", e.NS, tailFile(e.logPath, 3000))
	}
	return e
}

func (e *Etcd) stop() {
	if e.Client != nil {
		e.Client.Close()
	}
	e.p.stop(syscall.SIGKILL)
}

// Snapshot reads v6cni's whole key space at one revision.
func (l *Lab) Snapshot(ctx context.Context) (*store.Snapshot, error) {
	return store.New(l.Etcd.Client).Snapshot(ctx)
}
