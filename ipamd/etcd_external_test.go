package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// etcdBin is Debian's etcd-server (scripts/install-deps.sh installs it).
const etcdBin = "/usr/bin/etcd"

func needEtcd(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(etcdBin); err != nil {
		t.Fatalf("%s missing (Debian package etcd-server; run scripts/install-deps.sh as root): %v", etcdBin, err)
	}
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// member is one etcd process started by a test.
type member struct {
	name      string
	args      []string
	clientURL string
	cmd       *exec.Cmd
	done      chan struct{}
	log       *os.File
}

func (m *member) start(t *testing.T) {
	t.Helper()
	m.cmd = exec.Command(etcdBin, m.args...)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start etcd %s: %v", m.name, err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(m.cmd, m.done)
}

func (m *member) kill() {
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Signal(syscall.SIGKILL)
		<-m.done
	}
}

type tlsFiles struct{ ca, serverCert, serverKey, clientCert, clientKey string }

// startEtcdCluster starts n members on loopback ports (TLS on the client
// side when certs is set); all are killed when the test ends.
func startEtcdCluster(t *testing.T, n int, certs *tlsFiles) []*member {
	t.Helper()
	needEtcd(t)
	dir := shortDir(t)
	ports := freePorts(t, 2*n)
	scheme := "http"
	if certs != nil {
		scheme = "https"
	}
	var initial []string
	ms := make([]*member, n)
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])
		initial = append(initial, name+"="+peer)
		ms[i] = &member{name: name, clientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[2*i])}
	}
	for i, m := range ms {
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])
		m.args = []string{
			"--name", m.name, "--data-dir", filepath.Join(dir, m.name),
			"--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "v6cni-test-" + filepath.Base(dir),
			"--heartbeat-interval", "50", "--election-timeout", "500",
		}
		if certs != nil {
			m.args = append(m.args, "--cert-file", certs.serverCert, "--key-file", certs.serverKey,
				"--client-cert-auth", "--trusted-ca-file", certs.ca)
		}
		f, err := os.Create(filepath.Join(dir, m.name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		m.log = f
		m.start(t)
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.kill()
			if t.Failed() {
				out, _ := os.ReadFile(m.log.Name())
				t.Logf("etcd %s log (tail):\n%s", m.name, tail(string(out), 2000))
			}
			m.log.Close()
		}
	})
	return ms
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func endpoints(ms []*member) string {
	var eps []string
	for _, m := range ms {
		eps = append(eps, m.clientURL)
	}
	return strings.Join(eps, ",")
}

// consistent checks etcd's invariant as ipamd reports it: every lease's
// addresses are in the state held by that lease, and every held address
// belongs to a lease — nothing half-written.
func consistent(t *testing.T, cli *ipamapi.Client, network string) int {
	t.Helper()
	ctx := context.Background()
	ls, err := cli.Leases(ctx, network)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cli.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, n := range st.Networks {
		for _, b := range n.Blocks {
			for _, a := range b.Addrs {
				held[a.Addr] = a.ContainerID
			}
		}
	}
	for _, l := range ls {
		for _, a := range l.Addrs {
			addr := strings.Split(a, "/")[0]
			if held[addr] != l.ContainerID {
				t.Errorf("lease %s holds %s but etcd says %q", l.ContainerID, addr, held[addr])
			}
			delete(held, addr)
		}
	}
	if len(held) != 0 {
		t.Errorf("addresses without a lease: %v", held)
	}
	return len(ls)
}

// TestExternalEtcdCluster runs ipamd against a three-member etcd cluster of
// Debian's etcd-server: it keeps serving with one member down, fails ADDs
// with code 11 (bounded) without quorum, and serves again after recovery,
// with nothing half-written.
func TestExternalEtcdCluster(t *testing.T) {
	ms := startEtcdCluster(t, 3, nil)
	d := startIpamd(t, shortDir(t), "--etcd-endpoints", endpoints(ms))
	cli := ipamapi.NewClient(d.socket)
	ctx := context.Background()
	add := func(cid string) error {
		_, err := cli.Add(ctx, addReq("ha", cid, "2001:db8:7b::/48"))
		return err
	}
	if err := add("c1"); err != nil {
		t.Fatalf("ADD with 3 members: %v", err)
	}

	ms[2].kill()
	// If the killed member led, the two others elect a new leader (election
	// timeout 500 ms here): an ADD in that window gets code 11, which a
	// runtime retries. Then the cluster serves.
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := add("c2")
		if err == nil {
			break
		}
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || time.Now().After(deadline) {
			t.Fatalf("ADD with 2 of 3 members: %v", err)
		}
		t.Logf("ADD during the re-election: %v (retrying, as a runtime does)", err)
		time.Sleep(200 * time.Millisecond)
	}

	ms[1].kill()
	start := time.Now()
	err := add("c3")
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
		t.Fatalf("ADD without quorum: %v, want CNI code 11", err)
	}
	t.Logf("ADD without quorum failed in %v: %s", time.Since(start).Round(time.Millisecond), te.Msg)

	ms[1].start(t)
	ms[2].start(t)
	deadline = time.Now().Add(30 * time.Second)
	for {
		err := add("c4")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ADD after recovery: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := consistent(t, cli, "ha"); n < 3 || n > 4 {
		t.Errorf("%d leases after recovery, want c1, c2, c4 (and c3 only if its ADD is retried)", n)
	}
}

// TestExternalEtcdTLS: with client certificates ipamd works; with a CA that
// did not sign the server it refuses to start and says why.
func TestExternalEtcdTLS(t *testing.T) {
	dir := shortDir(t)
	good := writeCerts(t, filepath.Join(dir, "good"))
	bad := writeCerts(t, filepath.Join(dir, "bad"))
	ms := startEtcdCluster(t, 1, good)

	d := startIpamd(t, shortDir(t), "--etcd-endpoints", ms[0].clientURL,
		"--etcd-cacert", good.ca, "--etcd-cert", good.clientCert, "--etcd-key", good.clientKey)
	if _, err := ipamapi.NewClient(d.socket).Add(context.Background(), addReq("tls", "c1", "2001:db8:7c::/48")); err != nil {
		t.Fatalf("ADD over etcd TLS: %v", err)
	}

	out, err := exec.Command(ipamdBin, "serve", "--socket", filepath.Join(dir, "bad.sock"),
		"--etcd-endpoints", ms[0].clientURL,
		"--etcd-cacert", bad.ca, "--etcd-cert", bad.clientCert, "--etcd-key", bad.clientKey).CombinedOutput()
	if err == nil {
		t.Fatal("ipamd started with certificates of the wrong CA")
	}
	if !strings.Contains(string(out), "certificate") {
		t.Errorf("ipamd's refusal does not say why: %s", out)
	}
	out, err = exec.Command(ipamdBin, "serve", "--socket", filepath.Join(dir, "bad2.sock"),
		"--etcd-endpoints", ms[0].clientURL, "--etcd-cacert", good.ca, "--etcd-cert", good.clientCert).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--etcd-key") {
		t.Errorf("a cert without its key: err=%v out=%s", err, out)
	}
}

// writeCerts makes a CA, a server certificate for 127.0.0.1 and a client
// certificate, as PEM files in dir.
func writeCerts(t *testing.T, dir string) *tlsFiles {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "v6cni test CA " + filepath.Base(dir)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	f := &tlsFiles{ca: filepath.Join(dir, "ca.pem")}
	writePEM(t, f.ca, "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		c, k := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, c, "CERTIFICATE", der)
		writePEM(t, k, "EC PRIVATE KEY", kder)
		return c, k
	}
	f.serverCert, f.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	f.clientCert, f.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return f
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
