package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// TestPDClusterMode: an ipamd in pd mode cluster (one candidate, segment
// "lab") wins the segment's election, obtains a /56 from a real Kea and
// hands out pd-ipam addresses from it; `ipamd pd` shows the mode line.
// Stopped by SIGTERM (it resigns) and started again, it leads again at once
// and resumes the stored segment binding by Renew: same prefix, no Solicit.
func TestPDClusterMode(t *testing.T) {
	l := newBGPLab(t)
	l.startKea(t, 30, 60)
	dir := shortDir(t)
	cfg := l.config(t, dir)
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("pd:\n  mode: cluster\n  interface: up0\n  prefixLength: 56\n  cluster:\n    segment: lab\n    leaseTTL: 2s\n")
	f.Close()
	d := startIpamdIn(t, l.node, dir, "--config", cfg)
	ctx := context.Background()
	cli := ipamapi.NewClient(d.socket)
	var first string
	waitFor(t, 20*time.Second, "an address from the segment's delegated prefix", func() bool {
		r, err := cli.Add(ctx, pdReq("pdone", 1, "c1"))
		if err != nil {
			return false
		}
		first = r.IPs[0].Address.String()
		return true
	})
	pd, err := cli.PD(ctx)
	if err != nil || pd.Mode != "cluster" || pd.Segment != "lab" || pd.Leader != "test-node" || pd.Role != "leader" ||
		len(pd.Prefixes) != 1 || !strings.HasSuffix(pd.Prefixes[0].Prefix, "/56") {
		t.Fatalf("ipamd pd = %+v, %v", pd, err)
	}
	prefix := pd.Prefixes[0].Prefix
	out, err := exec.Command(ipamdBin, "pd", "--socket", d.socket).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "mode:      cluster  segment lab  leader test-node (since ") ||
		!strings.Contains(string(out), "this node: leader") || !strings.Contains(string(out), prefix) {
		t.Errorf("ipamd pd: %v\n%s", err, out)
	}
	t.Logf("ipamd pd:\n%s", out)

	d.stop(t)
	if !strings.Contains(d.log.String(), "exchange=solicit") {
		t.Errorf("first term: no take-over by Solicit logged:\n%s", d.log)
	}
	d = startIpamdIn(t, l.node, dir, "--config", cfg)
	cli = ipamapi.NewClient(d.socket)
	waitFor(t, 15*time.Second, "the restarted ipamd renewing the segment's binding", func() bool {
		return strings.Contains(d.log.String(), "pd: take-over done")
	})
	if s := d.log.String(); !strings.Contains(s, "exchange=renew") || strings.Contains(s, "exchange=solicit") {
		t.Errorf("restart: want a take-over by Renew, no Solicit:\n%s", s)
	}
	again, err := cli.Add(ctx, pdReq("pdone", 1, "c1"))
	if err != nil || again.IPs[0].Address.String() != first {
		t.Fatalf("after restart: %v %v, want %s", again, err, first)
	}
	pd, err = cli.PD(ctx)
	if err != nil || len(pd.Prefixes) != 1 || pd.Prefixes[0].Prefix != prefix || pd.Role != "leader" {
		t.Errorf("after restart: ipamd pd = %+v, %v; want %s, leader", pd, err, prefix)
	}
}
