package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/v6cni/v6cni/bench/internal/benchutil"
)

// etcdQuota is --quota-backend-bytes: etcd's suggested maximum (8 GiB), so
// the run measures the database's size instead of stopping at the 2 GiB
// default; the report compares the size with both.
const etcdQuota = 8 << 30

// etcdServer is one etcd-server process (Debian's package) on loopback of
// the run's private network namespace, with a fresh data directory.
type etcdServer struct {
	cmd      *exec.Cmd
	endpoint string
	dataDir  string
	log      string
	args     []string
	exited   chan struct{}
}

// startEtcd starts bin with its data under the run's directory, on two
// loopback ports it picks, and returns once it answers. A port taken
// between the pick and etcd's bind makes etcd exit at start: it is tried
// again on new ports.
func startEtcd(ctx context.Context, r *benchutil.Run, bin, name, gogc string) (*etcdServer, error) {
	var err error
	for try := 0; try < 3; try++ {
		var e *etcdServer
		if e, err = startEtcdOnce(ctx, r, bin, name, gogc); err == nil || !errors.Is(err, errExited) {
			return e, err
		}
		os.RemoveAll(filepath.Join(r.Dir, name))
	}
	return nil, err
}

// errExited says etcd exited at start.
var errExited = errors.New("etcd exited at start")

// freePorts returns n distinct free TCP ports of 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a port for etcd: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func startEtcdOnce(ctx context.Context, r *benchutil.Run, bin, name, gogc string) (*etcdServer, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	e := &etcdServer{
		endpoint: fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		dataDir:  filepath.Join(r.Dir, name),
		log:      filepath.Join(r.Dir, name+".log"),
		exited:   make(chan struct{}),
	}
	e.args = []string{
		"--name", name,
		"--data-dir", e.dataDir,
		"--listen-client-urls", e.endpoint, "--advertise-client-urls", e.endpoint,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", name + "=" + peer, "--initial-cluster-state", "new",
		"--quota-backend-bytes", fmt.Sprint(etcdQuota),
		// No automatic compaction: the run compacts once at the end, as a
		// kube-apiserver's periodic compaction would, and reports the size
		// before and after.
		"--auto-compaction-retention", "0",
		"--logger", "zap", "--log-level", "warn",
		// The gRPC handling-time histograms (grpc_server_handling_seconds)
		// on /metrics: the server's side of the probes' latency.
		"--metrics", "extensive",
	}
	logf, err := os.Create(e.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	e.cmd = exec.Command(bin, e.args...)
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	if gogc != "" {
		e.cmd.Env = append(os.Environ(), "GOGC="+gogc)
	}
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	r.RecordPID(e.cmd.Process.Pid)
	go func() { e.cmd.Wait(); close(e.exited) }()

	cli, err := e.client()
	if err != nil {
		e.stop()
		return nil, err
	}
	defer cli.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Status(sctx, e.endpoint)
		cancel()
		if err == nil {
			return e, nil
		}
		select {
		case <-e.exited:
			log, _ := os.ReadFile(e.log)
			return nil, fmt.Errorf("%w: %s", errExited, strings.TrimSpace(string(log)))
		case <-ctx.Done():
			e.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.stop()
			return nil, fmt.Errorf("etcd not answering on %s after 60 s (last: %v)", e.endpoint, err)
		}
	}
}

// client is a new etcd client of the server: one gRPC connection.
func (e *etcdServer) client() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{e.endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client of %s: %w", e.endpoint, err)
	}
	return cli, nil
}

// stop sends SIGTERM, then SIGKILL after 10 s; only to our own pid. The
// data directory goes with the run's temporary directory.
func (e *etcdServer) stop() {
	select {
	case <-e.exited:
		return
	default:
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		e.cmd.Process.Kill()
		<-e.exited
	}
}

// dbStatus is what etcd's status endpoint says of the backend.
type dbStatus struct {
	size, inUse int64
	revision    int64
}

func (e *etcdServer) status(ctx context.Context, cli *clientv3.Client) (dbStatus, error) {
	st, err := cli.Status(ctx, e.endpoint)
	if err != nil {
		return dbStatus{}, fmt.Errorf("etcd status: %w", err)
	}
	return dbStatus{size: st.DbSize, inUse: st.DbSizeInUse, revision: st.Header.Revision}, nil
}
