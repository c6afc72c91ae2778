package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/v6cni/v6cni/pkg/daemon/etcdembed"
)

// etcdConn is ipamd's etcd: the embedded one (embedded set) or an
// external cluster at eps.
type etcdConn struct {
	cli      *clientv3.Client
	embedded *etcdembed.Server
	eps      []string
	tls      *tls.Config
}

// openEtcd starts the embedded etcd in dataDir when endpoints is empty, or
// connects to the external cluster at endpoints (TLS from the three
// files, if any are set). Close it with close.
func openEtcd(ctx context.Context, endpoints, dataDir, ca, cert, key string, log *slog.Logger) (*etcdConn, error) {
	c := &etcdConn{eps: splitList(endpoints)}
	if len(c.eps) == 0 {
		startCtx, cancel := context.WithTimeout(ctx, time.Minute)
		embedded, err := etcdembed.Start(startCtx, dataDir, log)
		cancel()
		if err != nil {
			return nil, err
		}
		c.embedded = embedded
		c.eps = []string{embedded.Endpoint()}
	}
	var err error
	if c.tls, err = etcdTLS(ca, cert, key); err != nil {
		c.close()
		return nil, err
	}
	if c.tls != nil && c.embedded != nil {
		c.close()
		return nil, errors.New("--etcd-cacert/--etcd-cert/--etcd-key need --etcd-endpoints (the embedded etcd listens on a root-only unix socket)")
	}
	if c.embedded != nil {
		c.cli = c.embedded.Client()
		return c, nil
	}
	c.cli, err = clientv3.New(clientv3.Config{
		Endpoints:   c.eps,
		DialTimeout: 5 * time.Second,
		TLS:         c.tls,
		// ipamd reports etcd trouble itself, through slog, with the
		// request it affected: the client's own zap logging is silenced.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(c.eps, ","), err)
	}
	return c, nil
}

// close closes the client, then stops the embedded etcd.
func (c *etcdConn) close() {
	if c.cli != nil {
		c.cli.Close()
	}
	if c.embedded != nil {
		c.embedded.Close()
	}
}

// err reports the embedded etcd's failure; nil (never ready) for an
// external cluster.
func (c *etcdConn) err() <-chan error {
	if c.embedded == nil {
		return nil
	}
	return c.embedded.Err()
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
