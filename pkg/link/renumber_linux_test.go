package link

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
)

// renumberLab is a router namespace with a bridge carrying the gateways of
// an old and a new block (and of a peer's block), a container attached
// with an address of the old block and a default route via its gateway,
// and a peer in a third block, reached through the bridge.
type renumberLab struct {
	router, ctr, peer ns.NetNS
	mac               net.HardwareAddr
}

const renumberIf = "eth0" // inside the container's own namespace

var (
	rnOldGW   = netip.MustParseAddr("2001:db8:a1::1")
	rnNewGW   = netip.MustParseAddr("2001:db8:a2::1")
	rnOld     = netip.MustParsePrefix("2001:db8:a1::2/64")
	rnNew     = netip.MustParsePrefix("2001:db8:a2::2/64")
	rnPeerGW  = netip.MustParseAddr("2001:db8:a9::1")
	rnPeer    = netip.MustParsePrefix("2001:db8:a9::2/64")
	rnMAC     = net.HardwareAddr{0x02, 0x76, 0x36, 0x00, 0x0a, 0x02}
	rnPeerMAC = net.HardwareAddr{0x02, 0x76, 0x36, 0x00, 0x0a, 0x09}
)

func newRenumberLab(t *testing.T) *renumberLab {
	t.Helper()
	linktest.RequireRoot(t)
	lab := &renumberLab{router: linktest.NewNS(t), ctr: linktest.NewNS(t), peer: linktest.NewNS(t), mac: rnMAC}
	br := linktest.Name("v6rb")
	linktest.Bridge(t, lab.router, br)
	linktest.Do(t, lab.router, func() error {
		l, err := netlink.LinkByName(br)
		if err != nil {
			return err
		}
		for _, gw := range []netip.Addr{rnOldGW, rnNewGW, rnPeerGW} {
			if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(gw, 64)), Flags: unix.IFA_F_NODAD}); err != nil {
				return fmt.Errorf("add gateway %s: %w", gw, err)
			}
		}
		return nil
	})
	for _, end := range []struct {
		netns ns.NetNS
		mac   net.HardwareAddr
		addr  netip.Prefix
		gw    netip.Addr
	}{{lab.ctr, rnMAC, rnOld, rnOldGW}, {lab.peer, rnPeerMAC, rnPeer, rnPeerGW}} {
		linktest.Attach(t, lab.router, br, linktest.Name("v6rh"), end.netns, renumberIf, end.mac, nil)
		linktest.Do(t, end.netns, func() error {
			l, err := netlink.LinkByName(renumberIf)
			if err != nil {
				return err
			}
			if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipNet(end.addr), Flags: unix.IFA_F_NODAD}); err != nil {
				return err
			}
			return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: end.gw.AsSlice(),
				Dst: ipNet(netip.MustParsePrefix("::/0"))})
		})
	}
	return lab
}

// renumber runs RenumberContainer in the container.
func (lab *renumberLab) renumber(t *testing.T, r Renumbering) error {
	t.Helper()
	var err error
	if derr := lab.ctr.Do(func(ns.NetNS) error { err = RenumberContainer(r, time.Now()); return nil }); derr != nil {
		t.Fatal(derr)
	}
	return err
}

func (lab *renumberLab) job(validFor time.Duration) Renumbering {
	return Renumbering{IfName: renumberIf, MAC: lab.mac, Old: rnOld, New: rnNew,
		OldGateway: rnOldGW, NewGateway: rnNewGW, OldValidUntil: time.Now().Add(validFor)}
}

// ipAddr is one address of `ip -6 addr show`: its flags line and
// lifetimes.
type ipAddr struct {
	flags            string
	valid, preferred string
}

var ipAddrLine = regexp.MustCompile(`^\s+inet6 (\S+) (.*)$`)
var ipLftLine = regexp.MustCompile(`^\s+valid_lft (\S+) preferred_lft (\S+)`)

// addrs runs `ip -6 addr show dev eth0` in the container: what a user
// would look at.
func (lab *renumberLab) addrs(t *testing.T) map[netip.Prefix]ipAddr {
	t.Helper()
	out, err := linktest.Run(t, lab.ctr, 10*time.Second, "ip", "-6", "addr", "show", "dev", renumberIf)
	if err != nil {
		t.Fatalf("ip -6 addr: %v\n%s", err, out)
	}
	m := map[netip.Prefix]ipAddr{}
	var cur netip.Prefix
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if g := ipAddrLine.FindStringSubmatch(sc.Text()); g != nil {
			cur = netip.MustParsePrefix(g[1])
			m[cur] = ipAddr{flags: g[2]}
		} else if g := ipLftLine.FindStringSubmatch(sc.Text()); g != nil && cur.IsValid() {
			a := m[cur]
			a.valid, a.preferred = g[1], g[2]
			m[cur] = a
		}
	}
	return m
}

func (lab *renumberLab) defaultRoute(t *testing.T) string {
	t.Helper()
	out, err := linktest.Run(t, lab.ctr, 10*time.Second, "ip", "-6", "route", "show", "default")
	if err != nil {
		t.Fatalf("ip -6 route: %v\n%s", err, out)
	}
	return strings.TrimSpace(out)
}

// echoServer listens on the peer and echoes every connection, reporting
// each connection's remote address.
func (lab *renumberLab) echoServer(t *testing.T) (addr string, remotes <-chan netip.Addr) {
	t.Helper()
	var ln net.Listener
	linktest.Do(t, lab.peer, func() error {
		var err error
		ln, err = net.Listen("tcp6", net.JoinHostPort(rnPeer.Addr().String(), "0"))
		return err
	})
	t.Cleanup(func() { ln.Close() })
	ch := make(chan netip.Addr, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ch <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String(), ch
}

func (lab *renumberLab) dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	linktest.Do(t, lab.ctr, func() error {
		var err error
		c, err = net.DialTimeout("tcp6", addr, 10*time.Second)
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// echo sends a line on c and expects it back.
func echo(c net.Conn, line string) error {
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if got != line+"\n" {
		return fmt.Errorf("echoed %q, want %q", got, line)
	}
	return nil
}

func seconds(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSuffix(s, "sec"))
	if err != nil {
		t.Fatalf("lifetime %q: %v", s, err)
	}
	return n
}

// TestRenumberContainer: after RenumberContainer the container has the new
// address usable at once and the old one deprecated with the valid time
// left; the default route goes via the new gateway; a TCP connection
// opened from the old address goes on exchanging while the old address is
// valid; a new connection comes from the new address; the kernel removes
// the old address at its valid end; a second run changes nothing and
// does not bring the old address back.
func TestRenumberContainer(t *testing.T) {
	lab := newRenumberLab(t)
	addr, remotes := lab.echoServer(t)
	before := lab.dial(t, addr)
	if got := <-remotes; got != rnOld.Addr() {
		t.Fatalf("connection before renumbering from %s, want %s", got, rnOld.Addr())
	}
	if err := echo(before, "before"); err != nil {
		t.Fatal(err)
	}

	const validFor = 5 * time.Second
	if err := lab.renumber(t, lab.job(validFor)); err != nil {
		t.Fatal(err)
	}
	have := lab.addrs(t)
	n, ok := have[rnNew]
	if !ok {
		t.Fatalf("new address %s missing: %v", rnNew, have)
	}
	if strings.Contains(n.flags, "deprecated") || strings.Contains(n.flags, "tentative") || n.valid != "forever" || n.preferred != "forever" {
		t.Errorf("new address %s: %q valid %s preferred %s, want usable and permanent", rnNew, n.flags, n.valid, n.preferred)
	}
	o, ok := have[rnOld]
	if !ok {
		t.Fatalf("old address %s gone at once: %v", rnOld, have)
	}
	if !strings.Contains(o.flags, "deprecated") || o.preferred != "0sec" {
		t.Errorf("old address %s: %q preferred %s, want deprecated, preferred_lft 0", rnOld, o.flags, o.preferred)
	}
	if v := seconds(t, o.valid); v < 1 || v > int(validFor/time.Second) {
		t.Errorf("old address %s: valid_lft %s, want 1..%s", rnOld, o.valid, validFor)
	}
	if r := lab.defaultRoute(t); !strings.Contains(r, "via "+rnNewGW.String()) {
		t.Errorf("default route %q, want via %s", r, rnNewGW)
	}

	if err := echo(before, "during"); err != nil {
		t.Errorf("connection from the old address during its valid time: %v", err)
	}
	after := lab.dial(t, addr)
	if got := <-remotes; got != rnNew.Addr() {
		t.Errorf("new connection from %s, want %s", got, rnNew.Addr())
	}
	if err := echo(after, "after"); err != nil {
		t.Error(err)
	}

	linktest.Eventually(t, validFor+15*time.Second, 200*time.Millisecond, "the kernel removes the old address", func() (bool, string) {
		have := lab.addrs(t)
		_, still := have[rnOld]
		return !still, fmt.Sprint(have)
	})
	// Retried (a restart mid-way): the old address does not come back.
	if err := lab.renumber(t, lab.job(validFor)); err != nil {
		t.Fatal(err)
	}
	have = lab.addrs(t)
	if _, back := have[rnOld]; back {
		t.Errorf("a second run put the removed old address back: %v", have)
	}
	if _, ok := have[rnNew]; !ok {
		t.Errorf("new address gone after a second run: %v", have)
	}
	if err := echo(after, "again"); err != nil {
		t.Error(err)
	}
}

// TestRenumberContainerRefuses: a missing interface, another MAC, or an
// interface holding neither address fails with ErrIfaceMismatch and
// changes nothing; a valid time already past
// removes the old address at once.
func TestRenumberContainerRefuses(t *testing.T) {
	lab := newRenumberLab(t)
	for _, tc := range []struct {
		name string
		edit func(*Renumbering)
	}{
		{"other MAC", func(r *Renumbering) { r.MAC = rnPeerMAC }},
		{"no interface", func(r *Renumbering) { r.IfName = "eth9" }},
		{"no MAC known, neither address held", func(r *Renumbering) {
			r.MAC = nil
			r.Old = netip.MustParsePrefix("2001:db8:a1::77/64")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := lab.job(time.Minute)
			tc.edit(&r)
			err := lab.renumber(t, r)
			if !errors.Is(err, ErrIfaceMismatch) {
				t.Fatalf("error %v, want ErrIfaceMismatch", err)
			}
			have := lab.addrs(t)
			if _, ok := have[rnNew]; ok {
				t.Errorf("new address added despite the mismatch")
			}
			if o := have[rnOld]; strings.Contains(o.flags, "deprecated") {
				t.Errorf("old address deprecated despite the mismatch")
			}
		})
	}

	if err := lab.renumber(t, lab.job(-time.Second)); err != nil {
		t.Fatal(err)
	}
	have := lab.addrs(t)
	if _, ok := have[rnOld]; ok {
		t.Errorf("old address kept though its valid time is past: %v", have)
	}
	if _, ok := have[rnNew]; !ok {
		t.Errorf("new address missing: %v", have)
	}
	if r := lab.defaultRoute(t); !strings.Contains(r, "via "+rnNewGW.String()) {
		t.Errorf("default route %q, want via %s", r, rnNewGW)
	}
}
