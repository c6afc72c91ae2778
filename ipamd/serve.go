package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/bgpnet"
	"github.com/v6cni/v6cni/pkg/daemon/bridgesvc"
	"github.com/v6cni/v6cni/pkg/daemon/ipammetrics"
	"github.com/v6cni/v6cni/pkg/daemon/ipamserver"
	"github.com/v6cni/v6cni/pkg/daemon/nodes"
	"github.com/v6cni/v6cni/pkg/daemon/pdnet"
	"github.com/v6cni/v6cni/pkg/daemon/reclaim"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
	"github.com/v6cni/v6cni/pkg/link"
)

// serve runs the daemon: flags and the config file → etcd → store and
// allocator → the socket's server, with the metrics, the BGP speaker, the
// PD client and the bridges' services plugged in → the GC loop. It returns
// when a signal, the socket's server, the embedded etcd or the metrics
// server ends it.
func serve(args []string, stderr io.Writer) error {
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodeName := fs.String("node-name", host, "name of this node in the cluster")
	socket := fs.String("socket", ipamconf.DefaultSocket, "unix socket the IPAM plugins call (created 0600)")
	dataDir := fs.String("data-dir", "/var/lib/v6cni", "data directory of the embedded etcd (unused with --etcd-endpoints)")
	endpoints := fs.String("etcd-endpoints", "", "comma-separated URLs of an external etcd cluster; empty: run an embedded etcd")
	etcdCA := fs.String("etcd-cacert", "", "CA bundle that signed the etcd servers' certificates (enables TLS)")
	etcdCert := fs.String("etcd-cert", "", "client certificate for etcd")
	etcdKey := fs.String("etcd-key", "", "private key of the client certificate")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	metricsAddr := fs.String("metrics-addr", "", "HOST:PORT to serve Prometheus metrics on /metrics (empty: off)")
	gcInterval := fs.Duration("gc-interval", 5*time.Minute, "how often to release attachments whose netns is gone (0: only at start)")
	gcGrace := fs.Duration("gc-grace", 15*time.Minute, "never release an attachment younger than this")
	blockGrace := fs.Duration("block-grace", 15*time.Minute, "give an empty block back to the pool after this long")
	pdIface := fs.String("pd-interface", "", "uplink on which to obtain a prefix by DHCPv6-PD (empty: no PD client)")
	pdLen := fs.Int("pd-prefix-length", 0, "prefix length to ask for (hint; default 64)")
	nodeTTL := fs.Duration("node-ttl", nodes.DefaultTTL, "TTL of the etcd lease of this node's liveness record: how long a node whose ipamd was killed or cut off from etcd still shows alive (and how often it heartbeats)")
	deadNodeGrace := fs.Duration("dead-node-grace", 0, "remove nodes registered but not alive for longer than this, releasing their blocks (0: off; a node cut off from etcd may still run pods whose addresses would be handed out twice)")
	configFile := fs.String("config", "", "YAML config file: the same keys as the flags in camelCase, plus sections pd and bgp; flags win")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var fc *fileConfig
	if *configFile != "" {
		var err error
		if fc, err = loadConfig(*configFile, fs); err != nil {
			return err
		}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", fs.Args())
	}
	if *nodeName == "" {
		return errors.New("--node-name: empty (and no hostname to default to)")
	}
	log, err := newLogger(stderr, *logFormat)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	db, err := openEtcd(ctx, *endpoints, *dataDir, *etcdCA, *etcdCert, *etcdKey, log)
	if err != nil {
		return err
	}
	defer db.close()
	st := store.New(db.cli)

	initCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := st.Ping(initCtx); err != nil {
		return fmt.Errorf("etcd at %s: %w%s", strings.Join(db.eps, ","), err, diagnoseEtcd(db.eps, db.tls))
	}
	if *nodeTTL < 2*time.Second {
		return fmt.Errorf("--node-ttl: %s: at least 2s (the lease is kept alive every TTL/3)", *nodeTTL)
	}
	if *deadNodeGrace < 0 {
		return fmt.Errorf("--dead-node-grace: %s: must not be negative", *deadNodeGrace)
	}
	keeper, err := nodes.Register(initCtx, nodes.Config{Store: st, Node: *nodeName, TTL: *nodeTTL, Log: log})
	if err != nil {
		return err
	}
	// The keeper's defer runs before db.close: the lease is revoked (the
	// node shows dead at once) while etcd is still there.
	keepCtx, stopKeeper := context.WithCancel(ctx)
	keeperRuns := false
	defer func() {
		stopKeeper()
		if !keeperRuns {
			return
		}
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := keeper.Stop(sctx); err != nil {
			log.Warn("node stop", "error", err)
		}
	}()
	// Every write by which the node takes something is fenced by its
	// epoch: after a removal none of them can land.
	fst := st.Fenced(*nodeName, keeper.Epoch())
	alloc, err := allocator.New(initCtx, fst, *nodeName, log)
	if err != nil {
		return err
	}
	cancel()

	l, err := ipamserver.Listen(*socket)
	if err != nil {
		return err
	}
	defer os.Remove(*socket)
	srv := ipamserver.New(alloc, fst, log)
	srv.Version = version
	srv.Metrics = ipammetrics.New(alloc)
	metricsErr, closeMetrics, err := serveMetrics(*metricsAddr, srv.Metrics, log)
	if err != nil {
		return err
	}
	defer closeMetrics()
	if bgpCfg, ok, err := bgpConfig(fc); err != nil {
		return err
	} else if ok {
		bgp, err := bgpnet.Start(ctx, bgpCfg, alloc, log)
		if err != nil {
			return err
		}
		defer bgp.Stop()
		srv.Routing, srv.BGP = bgp.Health, bgp.State
		srv.Metrics.SetBGP(bgp.Metrics)
	}
	var pdSection json.RawMessage
	if fc != nil {
		pdSection = fc.PD
	}
	pdCfg, err := pdConfig(pdSection, *pdIface, *pdLen)
	if err != nil {
		return err
	}
	var delegated allocator.PDSource // the RAs and DHCPv6 follow its lifetimes
	var renumbering interface {      // and running containers its renumberings
		SetRenumberer(pdnet.Renumberer)
		Renumberings() map[string]uint64
	}
	switch {
	case pdCfg.Mode == pdnet.ModeCluster:
		pd, err := pdnet.StartCluster(ctx, pdCfg, db.cli, fst, *nodeName, alloc, log)
		if err != nil {
			return err
		}
		// Before etcd's client closes: a leader resigns on the way out,
		// so that the next candidate need not wait for the lease TTL.
		defer func() {
			stop() // also when serve fails: the cluster side ends with ctx
			select {
			case <-pd.Done():
			case <-time.After(5 * time.Second):
				log.Warn("pd: cluster side did not stop within 5 s")
			}
		}()
		srv.PD, srv.PDRelease = pd.State, pd.Release
		srv.Metrics.SetPDStats(pd.PDStats)
		delegated, renumbering = pd, pd
	case pdCfg.Interface != "":
		pd, err := pdnet.Start(ctx, pdCfg.ClientConfig(), fst, *nodeName, alloc, log)
		if err != nil {
			return err
		}
		srv.PD, srv.PDRelease = pd.State, pd.Release
		srv.Metrics.SetPDStats(pd.PDStats)
		delegated, renumbering = pd, pd
	}
	svc := bridgesvc.New(ctx, fst, *nodeName, log)
	if delegated != nil {
		svc.SetLifetimes(bridgesvc.PDLifetimes(delegated))
		// Running containers follow a new delegated prefix (renumbering,
		// make-before-break); without this their addresses would be lost
		// at the old prefix's end.
		rn := newRenumberer(svc.Sync, log)
		defer rn.Close()
		rn.kinds = renumbering.Renumberings
		renumbering.SetRenumberer(rn)
		srv.Metrics.SetRenumber(rn.Stats)
	}
	srv.Services = svc
	srv.Metrics.SetServices(svc.Metrics)
	defer svc.Stop()
	srv.Metrics.SetNode(keeper.Metrics(func() int { return len(alloc.Orphans().Handles) }))
	keeperRuns = true
	go keeper.Run(keepCtx, nodes.Hooks{
		Fenced:       fst,
		Refused:      alloc.FencedSignal(),
		Unregistered: alloc.SetUnregistered,
		OnLoss: func(ctx context.Context, loss allocator.Loss, epoch int64) error {
			return fenceNode(ctx, alloc, svc, loss, epoch)
		},
	})
	go keeper.ReleaseDead(keepCtx, db.cli, *deadNodeGrace, 0)
	go reclaim.Run(ctx, reclaim.Config{
		Alloc: alloc, Metrics: srv.Metrics, Log: log,
		Interval: *gcInterval, Grace: *gcGrace, BlockGrace: *blockGrace,
		NetnsExists: allocator.NetnsExists, Sync: svc.Sync,
	})
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	log.Info("ipamd serving", "version", version, "node", *nodeName, "socket", *socket, "etcd", strings.Join(db.eps, ","))

	select {
	case <-ctx.Done():
		log.Info("ipamd stopping")
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", *socket, err)
	case err := <-db.err():
		return fmt.Errorf("embedded etcd: %w", err)
	case err := <-metricsErr:
		return err // main prints it and exits 1
	}
	shutCtx, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	return srv.Shutdown(shutCtx)
}

// serveMetrics serves Prometheus metrics on addr ("": none). Metrics are
// how an operator notices trouble: a port that is taken fails the start
// (listened here, before serving), and a server that stops later stops
// ipamd (the error on the channel) rather than leaving it running
// unwatched.
func serveMetrics(addr string, m *ipammetrics.Metrics, log *slog.Logger) (<-chan error, func(), error) {
	if addr == "" {
		return nil, func() {}, nil
	}
	ml, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	ms := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	merr := make(chan error, 1)
	go func() {
		if err := ms.Serve(ml); !errors.Is(err, http.ErrServerClosed) {
			merr <- fmt.Errorf("metrics server on --metrics-addr %s: %w", addr, err)
		}
	}()
	log.Info("metrics serving", "addr", ml.Addr().String())
	return merr, func() { ms.Close() }, nil
}

// fenceNode is what the node does when it finds its registration removed
// while it ran: the allocator drops its blocks (their announcements
// follow), their gateway addresses leave the bridges, the lost
// attachments stop being served RAs and DHCPv6, and the store moves to
// the new epoch.
func fenceNode(ctx context.Context, alloc *allocator.Allocator, svc *bridgesvc.Services, loss allocator.Loss, epoch int64) error {
	_, err := alloc.Fence(ctx, loss, epoch, link.RemoveGateway)
	for i := range loss.Handles {
		if h := &loss.Handles[i]; h.Mode != "" {
			_ = svc.Detached(ctx, h)
		}
	}
	return err
}
