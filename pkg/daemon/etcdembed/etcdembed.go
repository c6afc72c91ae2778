// Package etcdembed runs the single-member etcd that ipamd embeds when no
// external etcd is configured. It listens only on unix sockets inside its
// data directory, so nothing on the network can reach it and several ipamd
// processes on one host never fight over ports.
package etcdembed

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
)

// maxSocketPath is the kernel's limit on a unix socket path (sun_path), less
// the terminating NUL.
const maxSocketPath = 107

// Server is a running embedded etcd.
type Server struct {
	etcd     *embed.Etcd
	endpoint string
	closing  *atomic.Bool // silences etcd's errors about its own shutdown
}

// Start starts an embedded etcd whose data lives in dir/etcd and returns once
// it serves clients, or ctx ends.
func Start(ctx context.Context, dir string, log *slog.Logger) (*Server, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: data dir %q: %w", dir, err)
	}
	if err := privateDir(dir, log); err != nil {
		return nil, err
	}
	clientSock := filepath.Join(dir, "etcd-client.sock")
	peerSock := filepath.Join(dir, "etcd-peer.sock")
	if len(peerSock) > maxSocketPath {
		return nil, fmt.Errorf("embedded etcd: data dir %s is too long for a unix socket path (max %d bytes with %q)",
			dir, maxSocketPath, filepath.Base(peerSock))
	}
	// Sockets left by a killed process would make the listen fail.
	for _, s := range []string{clientSock, peerSock} {
		if err := os.Remove(s); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("embedded etcd: remove stale socket %s: %w", s, err)
		}
	}

	cu := url.URL{Scheme: "unix", Path: clientSock}
	pu := url.URL{Scheme: "unix", Path: peerSock}
	cfg := embed.NewConfig()
	cfg.Name = "ipamd"
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.ListenClientHttpUrls = nil
	cfg.ListenMetricsUrls = nil
	// One member, a few MiB of state: keep the defaults' safety (fsync) but
	// compact history so the database does not grow with every ADD/DEL.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"
	// Raft entries kept in memory between snapshots: etcd's default (10k)
	// is sized for big clusters' slow followers; a single member only
	// needs enough to restart quickly, and every entry is heap.
	cfg.SnapshotCount = 2000
	cfg.SnapshotCatchUpEntries = 1000
	cfg.LogLevel = "error"
	core := &slogCore{log: log, closing: new(atomic.Bool)}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(core))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd in %s: %w", cfg.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: %w", cfg.Dir, err)
	case <-ctx.Done():
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: not ready: %w", cfg.Dir, ctx.Err())
	}
	log.Info("embedded etcd ready", "dir", cfg.Dir, "endpoint", cu.String())
	return &Server{etcd: e, endpoint: cu.String(), closing: core.closing}, nil
}

// privateDir creates dir 0700, or narrows an existing dir that group or
// others can enter to 0700: it holds every address, handle and (through
// the client socket) write access to all of them. Narrowed rather than
// refused: ipamd owns the directory, and one created 0755 by an earlier
// version or a package must not stop the node; the warning says it
// happened. A path that is not a directory is refused.
func privateDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("embedded etcd: create data dir %s: %w", dir, err)
	}
	for _, d := range []string{dir, filepath.Join(dir, "etcd")} {
		fi, err := os.Lstat(d)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("embedded etcd: data dir %s: %w", d, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("embedded etcd: data dir %s is not a directory (%s)", d, fi.Mode())
		}
		if mode := fi.Mode().Perm(); mode&0o077 != 0 {
			if err := os.Chmod(d, mode&0o700|0o700); err != nil {
				return fmt.Errorf("embedded etcd: data dir %s has mode %04o, narrowing it to 0700: %w", d, mode, err)
			}
			log.Warn("embedded etcd data dir was open to other users: narrowed to 0700", "dir", d, "was", fmt.Sprintf("%04o", mode))
		}
	}
	return nil
}

// Endpoint is the client URL to give clientv3.
func (s *Server) Endpoint() string { return s.endpoint }

// Client returns a client that calls the server in process: no gRPC
// encoding, no HTTP/2 framing and no socket round trip per request, on
// either side. An ipamd ADD is one etcd transaction, so this is most of
// what ipamd adds to the transaction's own cost (the WAL fsync). Close it
// before Close.
func (s *Server) Client() *clientv3.Client { return v3client.New(s.etcd.Server) }

// Err reports a fatal error of the running server.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the server, letting in-flight requests finish (bounded).
func (s *Server) Close() {
	s.closing.Store(true)
	done := make(chan struct{})
	go func() {
		s.etcd.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}
