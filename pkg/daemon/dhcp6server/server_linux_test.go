package dhcp6server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
)

const dhclientScript = `#!/bin/sh
{ echo "reason=$reason addr=$new_ip6_address preferred=$new_preferred_life valid=$new_max_life dns=$new_dhcp6_name_servers search=$new_dhcp6_domain_search"; } >> "$(dirname "$0")/events"
`

// lab is a bridge in a router namespace with this package's server on it,
// and dhclient -6 in a container namespace attached with mac.
type lab struct {
	dir    string
	events string
}

func startLab(t *testing.T, cfg Config, mac net.HardwareAddr, dhclientArgs ...string) *lab {
	t.Helper()
	linktest.RequireRoot(t)
	dhclient := linktest.RequireCommand(t, "dhclient", "isc-dhcp-client")
	router, cont := linktest.NewNS(t), linktest.NewNS(t)
	cfg.Interface = linktest.Name("dhbr")
	linktest.Bridge(t, router, cfg.Interface)
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wait := linktest.Go(t, router, func() error { return s.Run(ctx) })
	t.Cleanup(func() { cancel(); _ = wait() })
	linktest.Attach(t, router, cfg.Interface, linktest.Name("dhh"), cont, "eth0", mac, nil)

	l := &lab{dir: t.TempDir()}
	l.events = filepath.Join(l.dir, "events")
	script := filepath.Join(l.dir, "script")
	if err := os.WriteFile(script, []byte(dhclientScript), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(l.dir, "dhclient.conf")
	if err := os.WriteFile(conf, []byte("request dhcp6.name-servers, dhcp6.domain-search;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// -d: stays in the foreground, killed by pid at the end. The script
	// only records (it must not touch the host's /etc/resolv.conf).
	args := append([]string{"-6", "-d", "-v", "-cf", conf, "-sf", script,
		"-lf", filepath.Join(l.dir, "leases"), "-pf", filepath.Join(l.dir, "pid")}, dhclientArgs...)
	linktest.Start(t, cont, dhclient, append(args, "eth0")...)
	return l
}

func (l *lab) waitEvent(t *testing.T, what, contains string) string {
	t.Helper()
	var line string
	linktest.Eventually(t, 20*time.Second, 50*time.Millisecond, what, func() (bool, string) {
		b, _ := os.ReadFile(l.events)
		for _, ln := range strings.Split(string(b), "\n") {
			if strings.Contains(ln, contains) {
				line = ln
				return true, ""
			}
		}
		return false, fmt.Sprintf("dhclient-script events: %q", b)
	})
	return line
}

func TestStatelessWithDhclient(t *testing.T) {
	l := startLab(t, Config{
		DNS:    []netip.Addr{netip.MustParseAddr("2001:db8:cafe:a::e")},
		Search: []string{"example.com", "svc.example.com"},
	}, net.HardwareAddr{2, 0, 0, 0x10, 0x20, 0x30}, "-S")
	line := l.waitEvent(t, "Information-Request answered", "dns=2001:db8:cafe:a::e")
	if !strings.Contains(line, "search=example.com. svc.example.com.") && !strings.Contains(line, "search=example.com svc.example.com") {
		t.Fatalf("search list in %q", line)
	}
	if strings.Contains(line, "addr=2") {
		t.Fatalf("stateless exchange gave an address: %q", line)
	}
}

func TestStatefulWithDhclient(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0x10, 0x20, 0x31}
	want := netip.MustParseAddr("2001:db8:cafe:3::abcd")
	asked := make(chan string, 100)
	l := startLab(t, Config{
		DNS: []netip.Addr{netip.MustParseAddr("2001:db8:cafe:a::e")},
		Lookup: func(from Origin) ([]Lease, bool) {
			select {
			case asked <- from.MAC.String():
			default:
			}
			return []Lease{{Addr: want}}, from.MAC.String() == mac.String()
		},
	}, mac)
	line := l.waitEvent(t, "address bound", "reason=BOUND6")
	if !strings.Contains(line, "addr="+want.String()+" ") || !strings.Contains(line, "dns=2001:db8:cafe:a::e") {
		t.Fatalf("bound %q, want address %s and the DNS server", line, want)
	}
}

func TestUnknownClientWithDhclient(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0x10, 0x20, 0x32}
	asked := make(chan string, 100)
	l := startLab(t, Config{
		Lookup: func(from Origin) ([]Lease, bool) {
			asked <- from.MAC.String()
			return nil, false
		},
	}, mac)
	// Two Solicits answered NoAddrsAvail (the client retransmits), and
	// still no address.
	for i := range 2 {
		select {
		case got := <-asked:
			if got != mac.String() {
				t.Fatalf("lookup %d for %s, want the client's MAC %s", i, got, mac)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no Solicit %d from dhclient within 20s", i+1)
		}
	}
	if b, _ := os.ReadFile(l.events); strings.Contains(string(b), "BOUND6") {
		t.Fatalf("unknown client got an address: %s", b)
	}
}

// TestRenumberingWithDhclient: a stateful client bound to an address of a
// delegated prefix (lifetimes of its own, so a short T1) learns at its
// next Renew, after the lookup changed to a renumbering, the new address
// and the old one with preferred lifetime 0.
func TestRenumberingWithDhclient(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0x10, 0x20, 0x33}
	oldAddr := netip.MustParseAddr("2001:db8:1::33")
	newAddr := netip.MustParseAddr("2001:db8:2::33")
	var renumbered atomic.Bool
	var changed atomic.Int64 // unix nanoseconds of the switch
	l := startLab(t, Config{
		Lookup: func(from Origin) ([]Lease, bool) {
			if from.MAC.String() != mac.String() {
				return nil, false
			}
			// Preferred 4 s: T1 2 s, so the test is short; a real
			// delegated address has T1 MaxLimitedT1.
			if !renumbered.Load() {
				return []Lease{{Addr: oldAddr, Preferred: 4 * time.Second, Valid: time.Minute}}, true
			}
			left := time.Minute - time.Since(time.Unix(0, changed.Load()))
			return []Lease{{Addr: oldAddr, Deprecated: true, Valid: left}, {Addr: newAddr, Preferred: 4 * time.Second, Valid: time.Minute}}, true
		},
	}, mac)
	l.waitEvent(t, "old address bound", "reason=BOUND6 addr="+oldAddr.String()+" ")
	changed.Store(time.Now().UnixNano())
	renumbered.Store(true)
	line := l.waitEvent(t, "new address at the next Renew", "addr="+newAddr.String()+" ")
	t.Logf("client took the new address %s after the switch: %q", time.Since(time.Unix(0, changed.Load())).Round(time.Millisecond), line)
	if !strings.Contains(line, "preferred=4 ") {
		t.Errorf("new address: %q, want preferred 4", line)
	}
	old := l.waitEvent(t, "old address deprecated", "addr="+oldAddr.String()+" preferred=0 ")
	if !strings.Contains(old, "reason=RENEW6") && !strings.Contains(old, "reason=REBIND6") {
		t.Errorf("old address deprecated by %q, want a Renew", old)
	}
}
