package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/ipmath"
)

// startKea runs Kea's DHCPv6 server in the lab's router netns, delegating
// /56s from 2001:db8:a000::/40 with short timers; stopped by pid.
func (l *bgpLab) startKea(t *testing.T, preferred, valid int) (stop func()) {
	t.Helper()
	bin := "/usr/sbin/kea-dhcp6"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s missing (Debian package kea-dhcp6-server; run scripts/install-deps.sh)", bin)
	}
	dir := shortDir(t)
	subnet := netip.PrefixFrom(netip.MustParseAddr(l.routerAddr), 64).Masked().String()
	conf := fmt.Sprintf(`{"Dhcp6": {
  "interfaces-config": {"interfaces": ["down0"]},
  "server-id": {"type": "EN", "enterprise-id": 2495, "identifier": "0a0b0c0d", "persist": false},
  "data-directory": %q,
  "lease-database": {"type": "memfile", "persist": true, "name": %q, "lfc-interval": 0},
  "renew-timer": 2, "rebind-timer": 4, "preferred-lifetime": %d, "valid-lifetime": %d,
  "subnet6": [{"id": 1, "subnet": %q, "interface": "down0",
    "pd-pools": [{"prefix": "2001:db8:a000::", "prefix-len": 40, "delegated-len": 56}]}]
}}`, dir, filepath.Join(dir, "leases6.csv"), preferred, valid, subnet)
	path := filepath.Join(dir, "kea.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "kea.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", l.router, bin, "-c", path)
	cmd.Env = append(os.Environ(), "KEA_PIDFILE_DIR="+dir, "KEA_LOCKFILE_DIR="+dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			t.Logf("kea log (tail):\n%s", tail(string(out), 3000))
		}
	})
	return stop
}

func pdReq(network string, subnetID int, cid string) *ipamapi.Request {
	c := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"ipam":{"type":"pd-ipam","subnetId":%d}}`, network, subnetID)
	return &ipamapi.Request{Network: network, ContainerID: cid, IfName: "eth0", Config: []byte(c)}
}

// TestPDEndToEnd: ipamd obtains a /56 from a real Kea by DHCPv6-PD,
// pd-ipam networks get their /64s of it (subnetId 1 and 2), BIRD learns them
// by BGP; a restarted ipamd keeps the same prefix (Renew from the binding
// in etcd); with the server gone, the prefix expires at its valid lifetime:
// the blocks are withdrawn and STATUS says 51.
func TestPDEndToEnd(t *testing.T) {
	l := newBGPLab(t)
	stopKea := l.startKea(t, 6, 10)
	dir := shortDir(t)
	cfg := l.config(t, dir)
	pdFlags := []string{"--config", cfg, "--pd-interface", "up0", "--pd-prefix-length", "56"}
	started := time.Now()
	d := startIpamdIn(t, l.node, dir, pdFlags...)
	ctx := context.Background()
	cli := ipamapi.NewClient(d.socket)

	var first string
	waitFor(t, 20*time.Second, "first address from the delegated prefix", func() bool {
		r, err := cli.Add(ctx, pdReq("pdone", 1, "c1"))
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, "waiting for a delegated prefix on up0") {
				t.Fatalf("ADD before a prefix: %v, want code 11 waiting for a delegated prefix", err)
			}
			return false
		}
		first = r.IPs[0].Address.String()
		return true
	})
	t.Logf("ipamd start → first usable delegated address: %v", time.Since(started).Round(time.Millisecond))
	pd, err := cli.PD(ctx)
	if err != nil || len(pd.Prefixes) != 1 {
		t.Fatalf("ipamd pd = %+v, %v", pd, err)
	}
	prefix := pd.Prefixes[0].Prefix
	if !strings.HasSuffix(prefix, "/56") || !strings.HasPrefix(prefix, "2001:db8:a0") {
		t.Fatalf("delegated prefix %s, want a /56 of 2001:db8:a000::/40", prefix)
	}
	p56 := netip.MustParsePrefix(prefix)
	sub1, _ := ipmath.Subnet(p56, 64, 1)
	sub2, _ := ipmath.Subnet(p56, 64, 2)
	if want := netip.PrefixFrom(ipmath.FirstHost(sub1), 64).String(); first != want {
		t.Errorf("subnetId 1 address %s, want %s in %s", first, want, prefix)
	}
	r2, err := cli.Add(ctx, pdReq("pdtwo", 2, "c2"))
	if want := netip.PrefixFrom(ipmath.FirstHost(sub2), 64).String(); err != nil || r2.IPs[0].Address.String() != want {
		t.Fatalf("subnetId 2: %v %v, want %s", r2, err, want)
	}
	block1, block2 := sub1.String(), sub2.String()
	waitFor(t, 20*time.Second, "delegated /64s at BIRD", func() bool { return l.hasRoute(block1) && l.hasRoute(block2) })

	// Planned restart: the same prefix, by Renew from the stored binding.
	d.stop(t)
	d = startIpamdIn(t, l.node, dir, pdFlags...)
	cli = ipamapi.NewClient(d.socket)
	again, err := cli.Add(ctx, pdReq("pdone", 1, "c1"))
	if err != nil || again.IPs[0].Address.String() != first {
		t.Fatalf("after restart: %v %v, want %s", again, err, first)
	}
	// ipamd serves before its PD client has loaded the stored binding (a
	// repeated ADD needs no client), so `ipamd pd` may be empty for a moment.
	var pdAfter *ipamapi.PDState
	waitFor(t, 10*time.Second, "the stored binding in ipamd pd after restart", func() bool {
		pdAfter, err = cli.PD(ctx)
		return err == nil && len(pdAfter.Prefixes) == 1 && pdAfter.Prefixes[0].Prefix == prefix
	})

	// The server goes away: renew and rebind fail, the prefix expires.
	stopKea()
	waitFor(t, 40*time.Second, "STATUS 51 after the prefix expired", func() bool {
		err := cli.Status(ctx, pdReq("pdone", 1, ""))
		var te *types.Error
		return errors.As(err, &te) && te.Code == types.ErrLimitedConnectivity
	})
	waitFor(t, 20*time.Second, "withdrawal of the expired prefix's blocks", func() bool {
		return !l.hasRoute(block1) && !l.hasRoute(block2)
	})
	if err := cli.Check(ctx, pdReq("pdone", 1, "c1")); err == nil {
		t.Error("CHECK passed for an attachment whose prefix expired")
	}
	_, err = cli.Add(ctx, pdReq("pdone", 1, "c9"))
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
		t.Errorf("ADD without a prefix: %v, want code 11", err)
	}
}
