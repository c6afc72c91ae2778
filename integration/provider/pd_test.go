package provider

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/v6cni/v6cni/internal/testutil/upstream"
)

// pdPool is what the lab's Kea delegates /60s from.
var pdPool = netip.MustParsePrefix("2001:db8:d00::/48")

// TestProviderBesidePD is a node whose ipamd runs its DHCPv6-PD client
// on the uplink eth1 (node mode, Kea on the segment host delegating
// /60s with T1 3 s, T2 6 s) and which also has a provider network on
// eth1: the provider network's first ADD enslaves eth1 to the provider
// bridge, and the PD client must keep renewing its prefix through the
// bridge (same prefix, no new Solicit), while a pd-ipam routed container
// (its /64 of the delegated prefix) and a provider container reach the
// far host. The routers' route of the delegated prefix via the node is
// set by hand (the setup: as BGP would).
func TestProviderBesidePD(t *testing.T) {
	t.Parallel()
	l := upstream.Start(t, upstream.Config{Mode: upstream.VRRP, Addressing: upstream.SLAAC,
		AdvertInterval: 100 * time.Millisecond, PDPool: pdPool})
	n := newNode(t, l, 0x11, "--pd-interface", uplink, "--pd-prefix-length", strconv.Itoa(upstream.PDDelegatedLength))

	var prefix netip.Prefix
	if !upstream.Poll(30*time.Second, 100*time.Millisecond, func() bool {
		prefix = n.pdPrefix(t)
		return prefix.IsValid()
	}) {
		t.Fatalf("ipamd got no delegated prefix within 30s: %s", n.pdState(t))
	}
	if !pdPool.Contains(prefix.Addr()) || prefix.Bits() != upstream.PDDelegatedLength {
		t.Fatalf("delegated prefix %s not a /%d of %s", prefix, upstream.PDDelegatedLength, pdPool)
	}
	for _, r := range l.Routers {
		run(t, "ip", "-n", r.NS, "-6", "route", "add", prefix.String(), "via", n.addr.String())
	}

	pdc := n.newContainer(t, n.pdList(t))
	pdc.mustAdd(t)
	if !prefix.Contains(pdc.addr) {
		t.Fatalf("pd container's address %s not of the delegated %s", pdc.addr, prefix)
	}
	reach(t, pdc.ns, upstream.FarHost)

	// The client renews before the uplink moves (the setup works).
	before := keaPDRows(t, l, prefix)
	if !upstream.Poll(30*time.Second, 200*time.Millisecond, func() bool { return keaPDRows(t, l, prefix) > before }) {
		t.Fatalf("no renewal of %s within 30s before the provider ADD (T1 3 s)", prefix)
	}

	prov := n.newContainer(t, n.providerList(t, netOpts{mode: "slaac", eui64: true}))
	prov.mustAdd(t)
	if p := n.ports(t, n.provBridge); !slices.Contains(p, uplink) {
		t.Fatalf("provider bridge %s ports %v, want %s among them", n.provBridge, p, uplink)
	}
	moved := time.Now()
	verify(t, prov, upstream.GatewayLL)

	// Three Renews answered after the move, as the client saw them (its
	// log: a Renew that reaches Kea but whose Reply does not reach the
	// client is a row in Kea's lease file all the same). T1 3 s: about
	// 9 s; 60 s is the valid lifetime.
	keaBefore := keaPDRows(t, l, prefix)
	const want = 3
	var exch map[string]int
	var rebinding int
	ok := upstream.Poll(60*time.Second, 200*time.Millisecond, func() bool {
		exch, rebinding = n.pdExchangesSince(t, moved)
		return exch["RENEW"] >= want || exch["REBIND"] != 0 || rebinding != 0
	})
	t.Logf("PROVIDER-PD-FIGURES %s after the provider ADD, in %s: bindings updated (ipamd log) %v, Renews unanswered until T2 %d, rows in Kea's lease file %d (%d before)",
		prefix, time.Since(moved).Round(time.Millisecond), exch, rebinding, keaPDRows(t, l, prefix)-keaBefore, keaBefore)
	if os.Getenv("PDDEBUG") != "" {
		b, _ := os.ReadFile(n.logPath)
		t.Logf("ipamd log:\n%s", b)
	}
	if !ok || exch["RENEW"] < want || exch["socket-reopened"] != 1 || exch["REBIND"] != 0 || exch["REQUEST"] != 0 || rebinding != 0 {
		t.Errorf("after the provider ADD moved %s into %s the client got %v (want %d RENEW and 1 socket-reopened, nothing else) and rebinding %d times; ipamd pd: %s",
			uplink, n.provBridge, exch, want, rebinding, n.pdState(t))
	}
	if p := n.pdPrefix(t); p != prefix {
		t.Errorf("delegated prefix after the provider ADD %s, want %s (unchanged)", p, prefix)
	}
	if others := keaOtherPDRows(t, l, prefix); others != 0 {
		t.Errorf("Kea delegated %d other prefixes (a new Solicit)", others)
	}
	reach(t, pdc.ns, upstream.FarHost)
	reach(t, prov.ns, upstream.FarHost)
	reach(t, pdc.ns, prov.addr)
}

// pdList is a routed bridge-v6 network of the node whose addresses come
// from its delegated prefix (pd-ipam, subnet ID 1).
func (n *node) pdList(t *testing.T) *libcni.NetworkConfigList {
	t.Helper()
	plugin := map[string]any{
		"type": "bridge-v6", "bridge": "bd" + n.lab.ID, "isGateway": true, "isDefaultGateway": true, "ipMasq": false,
		"ipam": map[string]any{"type": "pd-ipam", "socket": n.socket, "subnetId": 1},
	}
	return confList(t, "pdnet", plugin)
}

// pdExchangesSince counts, in ipamd's log from t0 on, the PD client's
// updated bindings by the exchange that updated them (RENEW, REBIND,
// REQUEST; "socket-reopened" its moves onto the uplink's master) and its
// warnings of Renews unanswered until T2.
func (n *node) pdExchangesSince(t *testing.T, t0 time.Time) (map[string]int, int) {
	t.Helper()
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		t.Fatalf("ipamd log: %v", err)
	}
	exch, rebinding := map[string]int{}, 0
	for _, ln := range strings.Split(string(b), "\n") {
		f := strings.Fields(ln)
		if len(f) == 0 {
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(f[0], "time="))
		if err != nil || ts.Before(t0) {
			continue
		}
		if strings.Contains(ln, "before T2; rebinding") {
			rebinding++
		}
		if strings.Contains(ln, "socket reopened: the interface's master changed") {
			exch["socket-reopened"]++
		}
		if !strings.Contains(ln, `msg="PD binding updated"`) {
			continue
		}
		for _, w := range f {
			if after, ok := strings.CutPrefix(w, "after="); ok {
				exch[after]++
			}
		}
	}
	return exch, rebinding
}

// pdPrefix is ipamd's current delegated prefix (invalid when none).
func (n *node) pdPrefix(t *testing.T) netip.Prefix {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := n.client.PD(ctx)
	if err != nil {
		t.Fatalf("ipamd pd: %v", err)
	}
	for _, p := range st.Prefixes {
		if p.State == "" || p.State == "current" {
			if pf, err := netip.ParsePrefix(p.Prefix); err == nil {
				return pf
			}
		}
	}
	return netip.Prefix{}
}

func (n *node) pdState(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := n.client.PD(ctx)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%+v", *st)
}

// keaPDRows counts the rows of prefix in Kea's lease file (memfile
// appends one at each allocation and renewal).
func keaPDRows(t *testing.T, l *upstream.Lab, prefix netip.Prefix) int {
	t.Helper()
	n, _ := keaRows(t, l, prefix)
	return n
}

// keaOtherPDRows counts the delegated-prefix rows of other prefixes.
func keaOtherPDRows(t *testing.T, l *upstream.Lab, prefix netip.Prefix) int {
	t.Helper()
	_, n := keaRows(t, l, prefix)
	return n
}

func keaRows(t *testing.T, l *upstream.Lab, prefix netip.Prefix) (same, other int) {
	t.Helper()
	b, err := os.ReadFile(l.Kea.LeasePath)
	if err != nil {
		t.Fatalf("Kea's lease file: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) == 0 {
		return 0, 0
	}
	col := map[string]int{}
	for i, h := range strings.Split(lines[0], ",") {
		col[h] = i
	}
	for _, ln := range lines[1:] {
		f := strings.Split(ln, ",")
		if len(f) <= col["prefix_len"] || f[col["lease_type"]] != "2" {
			continue
		}
		a, err := netip.ParseAddr(f[col["address"]])
		if err != nil {
			continue
		}
		if a == prefix.Addr() && f[col["prefix_len"]] == strconv.Itoa(prefix.Bits()) {
			same++
		} else {
			other++
		}
	}
	return same, other
}
