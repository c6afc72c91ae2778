package link

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
)

// announceLab is a "container" namespace and a "peer" namespace joined by a
// veth pair, both ends up, IPv6 on, no DAD, no RAs, and the kernel's own
// announcements (ndisc_notify, arp_notify) off in the container: what the
// peer receives comes from the code under test.
type announceLab struct {
	ctr, peer           ns.NetNS
	ctrName, peerName   string
	ctrIndex, peerIndex int
	ctrLink             netlink.Link
	mac, peerMAC        net.HardwareAddr
	linkLocal           netip.Addr // the container end's
}

var (
	labMAC     = net.HardwareAddr{0x02, 0x76, 0x36, 0x00, 0x00, 0x02}
	labPeerMAC = net.HardwareAddr{0x02, 0x76, 0x36, 0x00, 0x00, 0x01}
	oldMAC     = net.HardwareAddr{0x02, 0xde, 0xad, 0x00, 0x00, 0x01}
)

func newAnnounceLab(tb testing.TB, ctrAddrs, peerAddrs []netip.Prefix) *announceLab {
	tb.Helper()
	linktest.RequireRoot(tb)
	lab := &announceLab{
		ctr:      linktest.NewNS(tb),
		peer:     linktest.NewNS(tb),
		ctrName:  linktest.Name("v6ac"),
		peerName: linktest.Name("v6ap"),
		mac:      labMAC,
		peerMAC:  labPeerMAC,
	}
	// Both namespaces are removed at the end of the test, and the veth with
	// them: nothing to clean up by hand.
	linktest.Do(tb, lab.peer, func() error {
		veth := &netlink.Veth{
			LinkAttrs:        netlink.LinkAttrs{Name: lab.peerName, HardwareAddr: lab.peerMAC},
			PeerName:         lab.ctrName,
			PeerHardwareAddr: lab.mac,
			PeerNamespace:    netlink.NsFd(int(lab.ctr.Fd())),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s: %w", lab.peerName, err)
		}
		l, err := labIface(lab.peerName, peerAddrs, nil)
		if err != nil {
			return err
		}
		lab.peerIndex = l.Attrs().Index
		return nil
	})
	linktest.Do(tb, lab.ctr, func() error {
		l, err := labIface(lab.ctrName, ctrAddrs, map[string]string{
			"net/ipv6/conf/" + lab.ctrName + "/ndisc_notify": "0",
			"net/ipv4/conf/" + lab.ctrName + "/arp_notify":   "0",
		})
		if err != nil {
			return err
		}
		lab.ctrLink, lab.ctrIndex = l, l.Attrs().Index
		// The link-local address comes with carrier, which linkwatch
		// reports asynchronously: wait (bounded) for it, usable.
		deadline := time.Now().Add(5 * time.Second)
		for {
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
			if err != nil {
				return err
			}
			for _, a := range addrs {
				if ip := AddrFromIP(a.IP); ip.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
					lab.linkLocal = ip
					return nil
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s got no usable link-local address within 5s: %v", lab.ctrName, addrs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	return lab
}

// labIface sets the sysctls of ifname (no DAD, no RAs, and extra), adds its
// addresses without DAD and sets it and lo up, in the calling thread's
// namespace.
func labIface(ifname string, addrs []netip.Prefix, extra map[string]string) (netlink.Link, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, err
	}
	keys := map[string]string{
		"net/ipv6/conf/" + ifname + "/accept_dad":   "0",
		"net/ipv6/conf/" + ifname + "/accept_ra":    "0",
		"net/ipv6/conf/" + ifname + "/disable_ipv6": "0",
	}
	for k, v := range extra {
		keys[k] = v
	}
	for k, v := range keys {
		if _, err := sysctl.Sysctl(k, v); err != nil {
			return nil, fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	for _, a := range addrs {
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipNet(a), Flags: unix.IFA_F_NODAD}); err != nil {
			return nil, fmt.Errorf("add %s to %s: %w", a, ifname, err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, err
	}
	for _, up := range []netlink.Link{lo, l} {
		if err := netlink.LinkSetUp(up); err != nil {
			return nil, fmt.Errorf("set %s up: %w", up.Attrs().Name, err)
		}
	}
	return l, nil
}

// capture reads what reaches the peer's end of the veth: an AF_PACKET
// socket of every protocol, bound to it, opened before the code under test
// sends.
type capture struct {
	fd int
}

func (lab *announceLab) capture(tb testing.TB) *capture {
	tb.Helper()
	c := &capture{fd: -1}
	linktest.Do(tb, lab.peer, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("open capture socket: %w", err)
		}
		c.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: lab.peerIndex}); err != nil {
			return fmt.Errorf("bind capture socket to %s: %w", lab.peerName, err)
		}
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	tb.Cleanup(func() { unix.Close(c.fd) })
	return c
}

// frames returns the frames the peer received on its interface (not the
// ones it sent) until want returns true for the whole set, then those of a
// further quiet period (to see any extra), or until timeout.
func (c *capture) frames(tb testing.TB, ifindex int, timeout time.Duration, want func([][]byte) bool) [][]byte {
	tb.Helper()
	var got [][]byte
	deadline := time.Now().Add(timeout)
	var quietUntil time.Time
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		if !quietUntil.IsZero() && time.Now().After(quietUntil) {
			break
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			tb.Fatalf("read capture: %v", err)
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Ifindex != ifindex || ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		got = append(got, slices.Clone(buf[:n]))
		if quietUntil.IsZero() && want(got) {
			quietUntil = time.Now().Add(200 * time.Millisecond)
		}
	}
	return got
}

// capturedNA is an unsolicited NA as received, its IPv6 header decoded.
type capturedNA struct {
	ethDst, ethSrc   net.HardwareAddr
	src, dst         netip.Addr
	hopLimit         uint8
	trafficClass     uint8
	flowLabel        uint32
	icmp             []byte // the ICMPv6 message, checksum included
	na               *ndp.NeighborAdvertisement
	parseErr, hdrErr error
}

// capturedARP is an ARP frame as received.
type capturedARP struct {
	ethDst, ethSrc net.HardwareAddr
	body           []byte
}

// decode sorts frames into neighbour advertisements and ARP frames; other
// frames (MLD reports, router solicitations) are dropped.
func decode(frames [][]byte) (nas []capturedNA, arps []capturedARP) {
	for _, f := range frames {
		if len(f) < 14 {
			continue
		}
		switch binary.BigEndian.Uint16(f[12:14]) {
		case unix.ETH_P_ARP:
			arps = append(arps, capturedARP{ethDst: f[0:6], ethSrc: f[6:12], body: f[14:]})
		case unix.ETH_P_IPV6:
			ip := f[14:]
			if len(ip) < 40+1 || ip[6] != unix.IPPROTO_ICMPV6 || ip[40] != icmpv6TypeNA {
				continue
			}
			vtf := binary.BigEndian.Uint32(ip[0:4])
			plen := int(binary.BigEndian.Uint16(ip[4:6]))
			c := capturedNA{
				ethDst:       f[0:6],
				ethSrc:       f[6:12],
				trafficClass: uint8(vtf >> 20),
				flowLabel:    vtf & 0xfffff,
				hopLimit:     ip[7],
				src:          netip.AddrFrom16([16]byte(ip[8:24])),
				dst:          netip.AddrFrom16([16]byte(ip[24:40])),
			}
			if vtf>>28 != 6 || 40+plen > len(ip) {
				c.hdrErr = fmt.Errorf("bad IPv6 header % x", ip[:40])
				nas = append(nas, c)
				continue
			}
			c.icmp = ip[40 : 40+plen]
			m, err := ndp.ParseMessage(c.icmp)
			c.parseErr = err
			c.na, _ = m.(*ndp.NeighborAdvertisement)
			nas = append(nas, c)
		}
	}
	return nas, arps
}

// naTargets returns the targets of the parsed advertisements.
func naTargets(nas []capturedNA) []netip.Addr {
	var out []netip.Addr
	for _, n := range nas {
		if n.na != nil {
			out = append(out, n.na.TargetAddress)
		}
	}
	return out
}

// arpSenders returns the sender IPv4 addresses of the ARP frames.
func arpSenders(arps []capturedARP) []netip.Addr {
	var out []netip.Addr
	for _, a := range arps {
		if len(a.body) >= 18 {
			out = append(out, netip.AddrFrom4([4]byte(a.body[14:18])))
		}
	}
	return out
}

func containsAll(have, want []netip.Addr) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// checkNA checks one captured advertisement against what the kernel's
// ndisc_send_unsol_na sends for target: Ethernet to 33:33:00:00:00:01 from
// mac, IPv6 from target to ff02::1, hop limit 255, traffic class and flow
// label 0, a valid checksum, Router and Solicited clear, Override set, the
// MAC in a Target Link-Layer Address option.
func checkNA(t *testing.T, n capturedNA, mac net.HardwareAddr) {
	t.Helper()
	if n.hdrErr != nil || n.parseErr != nil || n.na == nil {
		t.Errorf("malformed NA: header %v, ndp %v", n.hdrErr, n.parseErr)
		return
	}
	target := n.na.TargetAddress
	allNodesMAC := net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	if !bytes.Equal(n.ethDst, allNodesMAC) || !bytes.Equal(n.ethSrc, mac) {
		t.Errorf("NA for %s: Ethernet %s → %s, want %s → %s", target, n.ethSrc, n.ethDst, mac, allNodesMAC)
	}
	if n.src != target {
		t.Errorf("NA for %s: source %s, want the address itself", target, n.src)
	}
	if n.dst != netip.MustParseAddr("ff02::1") {
		t.Errorf("NA for %s: destination %s, want ff02::1", target, n.dst)
	}
	if n.hopLimit != 255 {
		t.Errorf("NA for %s: hop limit %d, want 255", target, n.hopLimit)
	}
	if n.trafficClass != 0 || n.flowLabel != 0 {
		t.Errorf("NA for %s: traffic class %d, flow label %#x, want 0, 0 (as the kernel's)", target, n.trafficClass, n.flowLabel)
	}
	if n.na.Router || n.na.Solicited || !n.na.Override {
		t.Errorf("NA for %s: R=%v S=%v O=%v, want R=false S=false O=true", target, n.na.Router, n.na.Solicited, n.na.Override)
	}
	if len(n.na.Options) != 1 {
		t.Errorf("NA for %s: options %v, want only the Target Link-Layer Address", target, n.na.Options)
	} else if lla, ok := n.na.Options[0].(*ndp.LinkLayerAddress); !ok || lla.Direction != ndp.Target || !bytes.Equal(lla.Addr, mac) {
		t.Errorf("NA for %s: option %#v, want Target Link-Layer Address %s", target, n.na.Options[0], mac)
	}
	// The whole message, checksum included, as an independent encoder
	// computes it for this source and destination.
	want, err := ndp.MarshalMessageChecksum(&ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: target,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}, n.src, n.dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(n.icmp, want) {
		t.Errorf("NA for %s: ICMPv6 bytes\n% x\nwant (ndp.MarshalMessageChecksum)\n% x", target, n.icmp, want)
	}
}

// checkGARP checks one captured ARP frame against what the kernel's
// arp_notify sends for addr: a broadcast ARP request from mac, sender and
// target address addr, target MAC zero.
func checkGARP(t *testing.T, a capturedARP, addr netip.Addr, mac net.HardwareAddr) {
	t.Helper()
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if !bytes.Equal(a.ethDst, bcast) || !bytes.Equal(a.ethSrc, mac) {
		t.Errorf("ARP for %s: Ethernet %s → %s, want %s → %s", addr, a.ethSrc, a.ethDst, mac, bcast)
	}
	if len(a.body) < 28 {
		t.Fatalf("ARP for %s: %d bytes", addr, len(a.body))
	}
	b := a.body
	if hdr := []byte{0, 1, 8, 0, 6, 4}; !bytes.Equal(b[:6], hdr) {
		t.Errorf("ARP for %s: header % x, want % x (Ethernet, IPv4)", addr, b[:6], hdr)
	}
	if op := binary.BigEndian.Uint16(b[6:8]); op != 1 {
		t.Errorf("ARP for %s: op %d, want 1 (request)", addr, op)
	}
	if !bytes.Equal(b[8:14], mac) || !bytes.Equal(b[18:24], make([]byte, 6)) {
		t.Errorf("ARP for %s: sender MAC %x target MAC %x, want %s and zero", addr, b[8:14], b[18:24], mac)
	}
	ip := addr.As4()
	if !bytes.Equal(b[14:18], ip[:]) || !bytes.Equal(b[24:28], ip[:]) {
		t.Errorf("ARP for %s: sender %v target %v, want both %s", addr, b[14:18], b[24:28], addr)
	}
}

// htons returns v in network byte order, as the sockaddr_ll protocol field
// wants it (x/sys/unix copies it unchanged).
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// staleNeighbours gives the peer an entry with oldMAC, STALE, for each
// address: a previous holder of the address left it.
func (lab *announceLab) staleNeighbours(tb testing.TB, addrs []netip.Addr) {
	tb.Helper()
	linktest.Do(tb, lab.peer, func() error {
		for _, a := range addrs {
			fam := netlink.FAMILY_V6
			if a.Is4() {
				fam = netlink.FAMILY_V4
			}
			if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: lab.peerIndex, Family: fam, State: netlink.NUD_STALE,
				IP: a.AsSlice(), HardwareAddr: oldMAC}); err != nil {
				return fmt.Errorf("neighbour %s on %s: %w", a, lab.peerName, err)
			}
		}
		return nil
	})
}

// peerMACs returns the MAC of the peer's neighbour entry of each address.
func (lab *announceLab) peerMACs(tb testing.TB) map[netip.Addr]string {
	tb.Helper()
	out := map[netip.Addr]string{}
	linktest.Do(tb, lab.peer, func() error {
		l, err := netlink.LinkByIndex(lab.peerIndex)
		if err != nil {
			return err
		}
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			entries, err := netlink.NeighList(l.Attrs().Index, fam)
			if err != nil {
				return err
			}
			for _, n := range entries {
				out[AddrFromIP(n.IP)] = n.HardwareAddr.String()
			}
		}
		return nil
	})
	return out
}

// watchPeerNeighbours subscribes to the peer's neighbour events; the
// returned function waits (bounded) until every address of want has an
// entry with mac.
func (lab *announceLab) watchPeerNeighbours(t *testing.T) func(want []netip.Addr, mac net.HardwareAddr) {
	t.Helper()
	updates := make(chan netlink.NeighUpdate, 256)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	linktest.Do(t, lab.peer, func() error {
		return netlink.NeighSubscribeWithOptions(updates, done, netlink.NeighSubscribeOptions{})
	})
	return func(want []netip.Addr, mac net.HardwareAddr) {
		t.Helper()
		pending := map[netip.Addr]bool{}
		have := lab.peerMACs(t) // entries already updated before the events were read
		for _, w := range want {
			if have[w] != mac.String() {
				pending[w] = true
			}
		}
		deadline := time.After(5 * time.Second)
		for len(pending) > 0 {
			select {
			case u := <-updates:
				if u.LinkIndex == lab.peerIndex && u.HardwareAddr.String() == mac.String() {
					delete(pending, AddrFromIP(u.IP))
				}
			case <-deadline:
				t.Fatalf("the peer's neighbour entries never got MAC %s for %v (entries: %v)", mac, slices.Collect(maps.Keys(pending)), lab.peerMACs(t))
			}
		}
	}
}

var (
	announceCtrAddrs = []netip.Prefix{
		mustPrefix("2001:db8:a::2/64"),
		mustPrefix("2001:db8:b::2/64"),
		mustPrefix("192.0.2.2/24"),
	}
	announcePeerAddrs = []netip.Prefix{
		mustPrefix("2001:db8:a::1/64"),
		mustPrefix("2001:db8:b::1/64"),
		mustPrefix("192.0.2.1/24"),
	}
)

// TestAnnounce: after each entry point, a peer whose neighbour entries for
// the container's addresses carry another MAC (STALE, no traffic) has the
// container's MAC for each, and what it received is, field by field, what
// the kernel's ndisc_notify / arp_notify send: one NA per IPv6 address
// (announceLink: the link-local one too), one gratuitous ARP
// per IPv4 address, nothing else.
func TestAnnounce(t *testing.T) {
	global6 := []netip.Addr{netip.MustParseAddr("2001:db8:a::2"), netip.MustParseAddr("2001:db8:b::2")}
	for _, tt := range []struct {
		name      string
		announce  func(lab *announceLab) error
		linkLocal bool // announced too
	}{
		{
			// Looked up by name, the MAC taken from the link: what the
			// removed Announce(name, nil) did.
			name: "announceLink, MAC of the link",
			announce: func(lab *announceLab) error {
				l, err := linkByName(lab.ctrName)
				if err != nil {
					return err
				}
				return announceLink(l, nil)
			},
			linkLocal: true,
		},
		{
			name:      "announceLink",
			announce:  func(lab *announceLab) error { return announceLink(lab.ctrLink, lab.mac) },
			linkLocal: true,
		},
		{
			name:     "AnnounceAddrs",
			announce: func(lab *announceLab) error { return AnnounceAddrs(lab.ctrLink, lab.mac, announceCtrAddrs) },
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lab := newAnnounceLab(t, announceCtrAddrs, announcePeerAddrs)
			want6 := slices.Clone(global6)
			if tt.linkLocal {
				want6 = append(want6, lab.linkLocal)
			}
			want4 := []netip.Addr{netip.MustParseAddr("192.0.2.2")}
			stale := append(slices.Clone(want6), want4...)
			lab.staleNeighbours(t, stale)
			waitNeighbours := lab.watchPeerNeighbours(t)
			capture := lab.capture(t)

			linktest.Do(t, lab.ctr, func() error { return tt.announce(lab) })

			frames := capture.frames(t, lab.peerIndex, 5*time.Second, func(f [][]byte) bool {
				nas, arps := decode(f)
				return containsAll(naTargets(nas), want6) && containsAll(arpSenders(arps), want4)
			})
			nas, arps := decode(frames)
			if got := naTargets(nas); len(nas) != len(want6) || !containsAll(got, want6) {
				t.Errorf("NAs for %v, want one for each of %v", got, want6)
			}
			for _, n := range nas {
				checkNA(t, n, lab.mac)
			}
			if got := arpSenders(arps); len(arps) != len(want4) || !containsAll(got, want4) {
				t.Errorf("ARPs for %v, want one for each of %v", got, want4)
			}
			for _, a := range arps {
				if len(a.body) >= 18 {
					checkGARP(t, a, netip.AddrFrom4([4]byte(a.body[14:18])), lab.mac)
				}
			}

			waitNeighbours(stale, lab.mac)

			// The neighbour entry that made the kernel send the
			// gratuitous ARP is gone.
			linktest.Do(t, lab.ctr, func() error {
				entries, err := netlink.NeighList(lab.ctrIndex, netlink.FAMILY_V4)
				for _, n := range entries {
					if slices.Contains(want4, AddrFromIP(n.IP)) {
						t.Errorf("the container kept a neighbour entry for its own address: %s", n.String())
					}
				}
				return err
			})
		})
	}
}

// TestAnnounceMatchesKernel: what announceLink sends is, frame for frame
// and byte for byte, what the kernel sends for the same interface when its
// MAC is set (ndisc_notify=1, arp_notify=1): the old way of announcing.
func TestAnnounceMatchesKernel(t *testing.T) {
	lab := newAnnounceLab(t, announceCtrAddrs, announcePeerAddrs)
	linktest.Do(t, lab.ctr, func() error {
		for _, k := range []string{"net/ipv6/conf/" + lab.ctrName + "/ndisc_notify", "net/ipv4/conf/" + lab.ctrName + "/arp_notify"} {
			if _, err := sysctl.Sysctl(k, "1"); err != nil {
				return err
			}
		}
		return nil
	})
	want6 := []netip.Addr{netip.MustParseAddr("2001:db8:a::2"), netip.MustParseAddr("2001:db8:b::2"), lab.linkLocal}
	want4 := []netip.Addr{netip.MustParseAddr("192.0.2.2")}
	complete := func(f [][]byte) bool {
		nas, arps := decode(f)
		return containsAll(naTargets(nas), want6) && containsAll(arpSenders(arps), want4)
	}
	// Announcement frames by kind and address.
	announcements := func(frames [][]byte) map[string][]byte {
		out := map[string][]byte{}
		for _, f := range frames {
			nas, arps := decode([][]byte{f})
			for _, n := range nas {
				if n.na != nil {
					out["NA "+n.na.TargetAddress.String()] = f
				}
			}
			for _, a := range arpSenders(arps) {
				out["ARP "+a.String()] = f
			}
		}
		return out
	}

	c := lab.capture(t)
	linktest.Do(t, lab.ctr, func() error { return netlink.LinkSetHardwareAddr(lab.ctrLink, lab.mac) })
	kernel := announcements(c.frames(t, lab.peerIndex, 5*time.Second, complete))

	c = lab.capture(t)
	linktest.Do(t, lab.ctr, func() error { return announceLink(lab.ctrLink, nil) })
	ours := announcements(c.frames(t, lab.peerIndex, 5*time.Second, complete))

	if len(kernel) != len(want6)+len(want4) {
		t.Fatalf("the kernel sent %d announcements (%v), want %d", len(kernel), slices.Collect(maps.Keys(kernel)), len(want6)+len(want4))
	}
	for k, kf := range kernel {
		of, ok := ours[k]
		switch {
		case !ok:
			t.Errorf("%s: the kernel sends it, announceLink does not", k)
		case !bytes.Equal(of, kf):
			t.Errorf("%s: announceLink sent\n% x\nthe kernel sends\n% x", k, of, kf)
		}
	}
	for k := range ours {
		if _, ok := kernel[k]; !ok {
			t.Errorf("%s: announceLink sends it, the kernel does not", k)
		}
	}
}

// TestAnnounceLinkSkipsTentative: an address still in DAD cannot be a
// source (the kernel refuses it) and the kernel would not announce it:
// announceLink leaves it out and announces the others.
func TestAnnounceLinkSkipsTentative(t *testing.T) {
	lab := newAnnounceLab(t, announceCtrAddrs[:1], announcePeerAddrs[:1])
	tentative := netip.MustParseAddr("2001:db8:c::2")
	linktest.Do(t, lab.ctr, func() error {
		// DAD on, with enough probes to stay tentative for the test.
		for k, v := range map[string]string{
			"net/ipv6/conf/" + lab.ctrName + "/accept_dad":     "1",
			"net/ipv6/conf/" + lab.ctrName + "/dad_transmits":  "30",
			"net/ipv6/conf/" + lab.ctrName + "/optimistic_dad": "0", // absent without CONFIG_IPV6_OPTIMISTIC_DAD
		} {
			if _, err := sysctl.Sysctl(k, v); err != nil && !strings.HasSuffix(k, "/optimistic_dad") {
				return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
			}
		}
		return netlink.AddrAdd(lab.ctrLink, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(tentative, 64))})
	})
	linktest.Do(t, lab.ctr, func() error {
		addrs, err := netlink.AddrList(lab.ctrLink, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if AddrFromIP(a.IP) == tentative && a.Flags&unix.IFA_F_TENTATIVE == 0 {
				return fmt.Errorf("%s is not tentative (flags %#x): the test proves nothing", tentative, a.Flags)
			}
		}
		return nil
	})
	capture := lab.capture(t)
	linktest.Do(t, lab.ctr, func() error { return announceLink(lab.ctrLink, nil) })

	want := []netip.Addr{netip.MustParseAddr("2001:db8:a::2"), lab.linkLocal}
	frames := capture.frames(t, lab.peerIndex, 5*time.Second, func(f [][]byte) bool {
		nas, _ := decode(f)
		return containsAll(naTargets(nas), want)
	})
	nas, _ := decode(frames)
	got := naTargets(nas)
	if !containsAll(got, want) || slices.Contains(got, tentative) {
		t.Errorf("NAs for %v, want %v and none for the tentative %s", got, want, tentative)
	}
}

// TestAnnounceAddrsSendFailure: an address that is not on the interface
// cannot be a source: the error names the interface and the address, and
// the other addresses are still announced.
func TestAnnounceAddrsSendFailure(t *testing.T) {
	lab := newAnnounceLab(t, announceCtrAddrs[:1], announcePeerAddrs[:1])
	capture := lab.capture(t)
	missing := mustPrefix("2001:db8:dead::2/64")
	var err error
	linktest.Do(t, lab.ctr, func() error {
		err = AnnounceAddrs(lab.ctrLink, nil, []netip.Prefix{missing, announceCtrAddrs[0]})
		return nil
	})
	if err == nil {
		t.Fatalf("AnnounceAddrs with %s, which %s does not carry, succeeded", missing, lab.ctrName)
	}
	for _, w := range []string{lab.ctrName, missing.Addr().String(), "neighbour advertisement"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	if strings.Contains(err.Error(), announceCtrAddrs[0].Addr().String()) {
		t.Errorf("error %q mentions %s, which was sent", err, announceCtrAddrs[0].Addr())
	}
	want := []netip.Addr{announceCtrAddrs[0].Addr()}
	frames := capture.frames(t, lab.peerIndex, 5*time.Second, func(f [][]byte) bool {
		nas, _ := decode(f)
		return containsAll(naTargets(nas), want)
	})
	nas, _ := decode(frames)
	if got := naTargets(nas); !slices.Equal(got, want) {
		t.Errorf("NAs for %v, want %v", got, want)
	}
}

// TestAnnounceAddrsGARPFailure: the kernel's refusal of the neighbour
// request (here: no such interface) is returned, naming the interface and
// the address.
func TestAnnounceAddrsGARPFailure(t *testing.T) {
	linktest.RequireRoot(t)
	netns := linktest.NewNS(t)
	gone := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "v6tgone", Index: 1 << 20, HardwareAddr: labMAC}}
	var err error
	linktest.Do(t, netns, func() error {
		err = AnnounceAddrs(gone, nil, []netip.Prefix{mustPrefix("192.0.2.9/24"), mustPrefix("192.0.2.10/24")})
		return nil
	})
	if !errors.Is(err, unix.ENODEV) {
		t.Fatalf("AnnounceAddrs on a missing interface: %v, want ENODEV", err)
	}
	for _, w := range []string{"v6tgone", "192.0.2.9", "192.0.2.10", "gratuitous ARP"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

// TestAnnounceDownLink: a link that is down cannot send; the error says
// which interface.
func TestAnnounceDownLink(t *testing.T) {
	lab := newAnnounceLab(t, announceCtrAddrs, announcePeerAddrs)
	var err error
	linktest.Do(t, lab.ctr, func() error {
		if err := netlink.LinkSetDown(lab.ctrLink); err != nil {
			return err
		}
		err = AnnounceAddrs(lab.ctrLink, nil, []netip.Prefix{mustPrefix("2001:db8:a::2/64")})
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), lab.ctrName) || !strings.Contains(err.Error(), "2001:db8:a::2") {
		t.Fatalf("AnnounceAddrs on a down link: %v, want an error naming %s and 2001:db8:a::2", err, lab.ctrName)
	}
}

// BenchmarkAnnounce compares, in a namespace, the old announcement
// (setting the MAC to itself: NETDEV_CHANGEADDR, the kernel sends with
// ndisc_notify and arp_notify on, as bridge-v6 sets them) with the new
// entry points, for an IPv6-only container (two addresses) and a
// dual-stack one (and one IPv4 address). The link-local address is
// announced by the old way and announceLink, not by AnnounceAddrs given the
// plugin's addresses. The time includes the peer's processing of what it
// receives (veth delivers in the sender's softirq).
func BenchmarkAnnounce(b *testing.B) {
	for _, stack := range []struct {
		name  string
		addrs []netip.Prefix
	}{
		{"v6", announceCtrAddrs[:2]},
		{"dual", announceCtrAddrs},
	} {
		b.Run(stack.name, func(b *testing.B) {
			lab := newAnnounceLab(b, stack.addrs, announcePeerAddrs)
			linktest.Do(b, lab.ctr, func() error {
				for _, k := range []string{"net/ipv6/conf/" + lab.ctrName + "/ndisc_notify", "net/ipv4/conf/" + lab.ctrName + "/arp_notify"} {
					if _, err := sysctl.Sysctl(k, "1"); err != nil {
						return err
					}
				}
				return nil
			})
			for _, bm := range []struct {
				name string
				f    func() error
			}{
				{"old-setmac", func() error { return netlink.LinkSetHardwareAddr(lab.ctrLink, lab.mac) }},
				{"announceLink", func() error { return announceLink(lab.ctrLink, lab.mac) }},
				{"AnnounceAddrs", func() error { return AnnounceAddrs(lab.ctrLink, lab.mac, stack.addrs) }},
			} {
				b.Run(bm.name, func(b *testing.B) {
					linktest.Do(b, lab.ctr, func() error {
						b.ResetTimer()
						for range b.N {
							if err := bm.f(); err != nil {
								return err
							}
						}
						b.StopTimer()
						return nil
					})
				})
			}
		})
	}
}

// TestAnnounceBeforeMulticastRoute covers the moment right after link-up:
// the kernel adds the interface's multicast route (ff00::/8, table local)
// only when linkwatch reports the carrier, which may come after the host
// end of the veth is already forwarding. Without that route (and without a
// default route) a send to ff02::1 fails with ENETUNREACH.
func TestAnnounceBeforeMulticastRoute(t *testing.T) {
	lab := newAnnounceLab(t, announceCtrAddrs, announcePeerAddrs)
	capture := lab.capture(t)
	linktest.Do(t, lab.ctr, func() error {
		mroute := &netlink.Route{LinkIndex: lab.ctrIndex, Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_MULTICAST,
			Dst: &net.IPNet{IP: net.ParseIP("ff00::"), Mask: net.CIDRMask(8, 128)}, Priority: 256}
		if err := netlink.RouteDel(mroute); err != nil {
			return fmt.Errorf("remove the multicast route of %s: %w", lab.ctrName, err)
		}
		if err := AnnounceAddrs(lab.ctrLink, lab.mac, announceCtrAddrs); err != nil {
			return err
		}
		// The route put back is the kernel's own: one, proto kernel.
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{LinkIndex: lab.ctrIndex, Table: unix.RT_TABLE_LOCAL},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		n := 0
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == "ff00::/8" {
				n++
				if r.Protocol != unix.RTPROT_KERNEL || r.Type != unix.RTN_MULTICAST || r.Priority != 256 {
					t.Errorf("multicast route %s: protocol %d type %d metric %d, want the kernel's", r, r.Protocol, r.Type, r.Priority)
				}
			}
		}
		if n != 1 {
			t.Errorf("%d ff00::/8 routes on %s after the announcement, want 1", n, lab.ctrName)
		}
		return nil
	})
	want := []netip.Addr{netip.MustParseAddr("2001:db8:a::2"), netip.MustParseAddr("2001:db8:b::2")}
	frames := capture.frames(t, lab.peerIndex, 5*time.Second, func(f [][]byte) bool {
		nas, _ := decode(f)
		return containsAll(naTargets(nas), want)
	})
	if nas, _ := decode(frames); !containsAll(naTargets(nas), want) {
		t.Errorf("NAs for %v, want one for each of %v", naTargets(nas), want)
	}
}
