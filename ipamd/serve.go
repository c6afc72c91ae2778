package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/bgpnet"
	"github.com/v6cni/v6cni/pkg/daemon/bridgesvc"
	"github.com/v6cni/v6cni/pkg/daemon/etcdembed"
	"github.com/v6cni/v6cni/pkg/daemon/ipammetrics"
	"github.com/v6cni/v6cni/pkg/daemon/ipamserver"
	"github.com/v6cni/v6cni/pkg/daemon/pdnet"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// nodeTTL is how long a node record outlives its ipamd.
const nodeTTL = 30 * time.Second

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

	eps := splitList(*endpoints)
	var embedded *etcdembed.Server
	if len(eps) == 0 {
		startCtx, cancel := context.WithTimeout(ctx, time.Minute)
		embedded, err = etcdembed.Start(startCtx, *dataDir, log)
		cancel()
		if err != nil {
			return err
		}
		defer embedded.Close()
		eps = []string{embedded.Endpoint()}
	}
	tlsConf, err := etcdTLS(*etcdCA, *etcdCert, *etcdKey)
	if err != nil {
		return err
	}
	if tlsConf != nil && embedded != nil {
		return errors.New("--etcd-cacert/--etcd-cert/--etcd-key need --etcd-endpoints (the embedded etcd listens on a root-only unix socket)")
	}
	var cli *clientv3.Client
	if embedded != nil {
		cli = embedded.Client()
	} else {
		cli, err = clientv3.New(clientv3.Config{
			Endpoints:   eps,
			DialTimeout: 5 * time.Second,
			TLS:         tlsConf,
			Logger:      nopZap(),
		})
		if err != nil {
			return fmt.Errorf("etcd client for %s: %w", strings.Join(eps, ","), err)
		}
	}
	defer cli.Close()
	st := store.New(cli)

	initCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := st.Ping(initCtx); err != nil {
		return fmt.Errorf("etcd at %s: %w%s", strings.Join(eps, ","), err, diagnoseEtcd(eps, tlsConf))
	}
	if err := st.RegisterNode(ctx, store.Node{Name: *nodeName, Started: time.Now().UTC()}, nodeTTL); err != nil {
		return err
	}
	alloc, err := allocator.New(initCtx, st, *nodeName, log)
	if err != nil {
		return err
	}
	cancel()

	l, err := ipamserver.Listen(*socket)
	if err != nil {
		return err
	}
	defer os.Remove(*socket)
	srv := ipamserver.New(alloc, st, log)
	srv.Version = version
	srv.Metrics = ipammetrics.New(alloc)
	// Metrics are how an operator notices trouble: a port that is taken
	// fails the start (listened here, before serving), and a server that
	// stops later stops ipamd (metricsErr, below) rather than leaving it
	// running unwatched.
	var metricsErr <-chan error
	if *metricsAddr != "" {
		ml, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics-addr %s: %w", *metricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", srv.Metrics.Handler())
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		merr := make(chan error, 1)
		go func() {
			if err := ms.Serve(ml); !errors.Is(err, http.ErrServerClosed) {
				merr <- fmt.Errorf("metrics server on --metrics-addr %s: %w", *metricsAddr, err)
			}
		}()
		metricsErr = merr
		defer ms.Close()
		log.Info("metrics serving", "addr", ml.Addr().String())
	}
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
	if pdCfg.Interface != "" {
		pd, err := pdnet.Start(ctx, pdCfg, st, *nodeName, alloc, log)
		if err != nil {
			return err
		}
		srv.PD, srv.PDRelease = pd.State, pd.Release
		srv.Metrics.SetPD(pd.Metrics)
	}
	svc := bridgesvc.New(ctx, st, *nodeName, log)
	srv.Services = svc
	srv.Metrics.SetServices(svc.Metrics)
	defer svc.Stop()
	go reclaimLoop(ctx, alloc, srv.Metrics, log, *gcInterval, *gcGrace, *blockGrace, svc.Sync)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	log.Info("ipamd serving", "version", version, "node", *nodeName, "socket", *socket, "etcd", strings.Join(eps, ","))

	var etcdErr <-chan error
	if embedded != nil {
		etcdErr = embedded.Err()
	}
	select {
	case <-ctx.Done():
		log.Info("ipamd stopping")
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", *socket, err)
	case err := <-etcdErr:
		return fmt.Errorf("embedded etcd: %w", err)
	case err := <-metricsErr:
		return err // main prints it and exits 1
	}
	shutCtx, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	return srv.Shutdown(shutCtx)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// reclaimLoop releases, at start and then every interval, this node's
// attachments whose network namespace is gone: runtimes skip DEL after a
// crash or a reboot, and those addresses would leak forever.
func reclaimLoop(ctx context.Context, alloc *allocator.Allocator, m *ipammetrics.Metrics, log *slog.Logger, interval, grace, blockGrace time.Duration, sync func(context.Context) error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		released, err := alloc.Reclaim(rctx, grace, ipamserver.NetnsExists)
		cancel()
		m.Reclaimed(len(released))
		for _, h := range released {
			log.Info("GC released", "network", h.Network, "container", h.ContainerID, "ifname", h.IfName, "netns", h.Netns)
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("GC of stale attachments", "error", err)
		}
		rctx, cancel = context.WithTimeout(ctx, time.Minute)
		expired, err := alloc.ExpireSticky(rctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			log.Warn("release of expired sticky addresses", "error", err)
		}
		for _, st := range expired {
			log.Info("sticky addresses expired", "network", st.Network, "pod", st.Pod, "ifname", st.IfName)
		}
		rctx, cancel = context.WithTimeout(ctx, time.Minute)
		bridgesvc.ReleaseEmptyBlocks(rctx, alloc, blockGrace, log)
		cancel()
		// Router advertisements follow the attachments that remain.
		rctx, cancel = context.WithTimeout(ctx, time.Minute)
		if err := sync(rctx); err != nil && ctx.Err() == nil {
			log.Warn("router advertisement services", "error", err)
		}
		cancel()
		if interval <= 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// etcdTLS builds the client TLS configuration from the three flags; nil
// when none is set.
func etcdTLS(ca, cert, key string) (*tls.Config, error) {
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("--etcd-cert and --etcd-key go together")
	}
	info := transport.TLSInfo{TrustedCAFile: ca, CertFile: cert, KeyFile: key}
	c, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd TLS (--etcd-cacert %q, --etcd-cert %q, --etcd-key %q): %w", ca, cert, key, err)
	}
	return c, nil
}

// diagnoseEtcd says why etcd did not answer when the client only knows it
// timed out: a TLS handshake with the first TCP endpoint names a bad
// certificate or a refused connection.
func diagnoseEtcd(eps []string, conf *tls.Config) string {
	for _, ep := range eps {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
			continue
		}
		d := &net.Dialer{Timeout: 3 * time.Second}
		if u.Scheme == "http" {
			c, err := d.Dial("tcp", u.Host)
			if err != nil {
				return fmt.Sprintf(" (%s: %v)", ep, err)
			}
			c.Close()
			continue
		}
		tc := &tls.Config{}
		if conf != nil {
			tc = conf.Clone()
		}
		tc.ServerName = u.Hostname()
		c, err := tls.DialWithDialer(d, "tcp", u.Host, tc)
		if err != nil {
			return fmt.Sprintf(" (TLS with %s: %v)", ep, err)
		}
		c.Close()
	}
	return ""
}
