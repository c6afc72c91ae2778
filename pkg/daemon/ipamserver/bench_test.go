package ipamserver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// serveForBench runs a Server on a unix socket against an embedded etcd.
func serveForBench(b *testing.B) string {
	b.Helper()
	st := store.New(etcdtest.Client(b))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	alloc, err := allocator.New(context.Background(), st, "bench", log)
	if err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "ipamsrv")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	l, err := Listen(sock)
	if err != nil {
		b.Fatal(err)
	}
	srv := New(alloc, st, log)
	go srv.Serve(l)
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	return sock
}

var benchSeq atomic.Int64

func benchReq(b *testing.B) *ipamapi.Request {
	n := benchSeq.Add(1)
	return &ipamapi.Request{
		Network: "bench", ContainerID: fmt.Sprintf("c%09d", n), IfName: "eth0",
		Config: []byte(`{"cniVersion":"1.1.0","name":"bench","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8:be::/48"}]],"routes":[{"dst":"::/0"}]}}`),
	}
}

// BenchmarkAdd is one ADD through the socket, as a plugin sends it: decode,
// validate, allocate in etcd (one transaction), answer.
func BenchmarkAdd(b *testing.B) {
	cli := ipamapi.NewClient(serveForBench(b))
	b.ResetTimer()
	for b.Loop() {
		if _, err := cli.Add(context.Background(), benchReq(b)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddParallel is ADDs from many plugins at once.
func BenchmarkAddParallel(b *testing.B) {
	cli := ipamapi.NewClient(serveForBench(b))
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cli.Add(context.Background(), benchReq(b)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
