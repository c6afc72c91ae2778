// Package etcdtest starts a real, embedded, single-member etcd for tests of
// packages that talk to etcd. It is for tests only.
package etcdtest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/v6cni/v6cni/pkg/daemon/etcdembed"
)

// Client starts an embedded etcd in a fresh directory and returns a client
// of it; both are stopped when the test ends.
func Client(t testing.TB) *clientv3.Client {
	t.Helper()
	// Not t.TempDir(): its path grows with the test name and unix socket
	// paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "etcdtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := etcdembed.Start(ctx, dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	t.Cleanup(srv.Close)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{srv.Endpoint()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
