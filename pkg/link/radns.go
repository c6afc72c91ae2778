package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/mdlayher/ndp"
	"golang.org/x/sys/unix"
)

// This file: the DNS options of router advertisements (RFC 8106, RDNSS
// and DNSSL), which the kernel ignores: the container's kernel learns its
// address and default router from an upstream router's RA, and the plugin
// reads the same RA for the CNI result's dns.

// icmpv6TypeRA is the ICMPv6 type of a router advertisement.
const icmpv6TypeRA = 134

// RAListener receives the router advertisements that arrive on one
// interface, queued in a raw ICMPv6 socket until DNS reads them.
type RAListener struct {
	fd     int
	ifname string
}

// ListenRA opens a listener for the RAs arriving on ifname, in the network
// namespace of the calling thread. Open it before the interface comes up
// (or before soliciting a router): an RA that arrived before is not seen.
func ListenRA(ifname string) (*RAListener, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_ICMPV6)
	if err != nil {
		return nil, fmt.Errorf("listen for router advertisements on %s: open ICMPv6 socket: %w", ifname, err)
	}
	fail := func(what string, err error) (*RAListener, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("listen for router advertisements on %s: %s: %w", ifname, what, err)
	}
	// ICMPV6_FILTER: a set bit blocks its type; only RAs pass.
	var filter unix.ICMPv6Filter
	for i := range filter.Data {
		filter.Data[i] = ^uint32(0)
	}
	filter.Data[icmpv6TypeRA>>5] &^= 1 << (icmpv6TypeRA & 31)
	if err := unix.SetsockoptICMPv6Filter(fd, unix.IPPROTO_ICMPV6, unix.ICMPV6_FILTER, &filter); err != nil {
		return fail("set ICMPV6_FILTER", err)
	}
	if err := unix.BindToDevice(fd, ifname); err != nil {
		return fail("SO_BINDTODEVICE", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1); err != nil {
		return fail("IPV6_RECVHOPLIMIT", err)
	}
	return &RAListener{fd: fd, ifname: ifname}, nil
}

// Close closes the listener.
func (l *RAListener) Close() error { return unix.Close(l.fd) }

// RADNS is what router advertisements say of DNS.
type RADNS struct {
	// Nameservers are the RDNSS options' servers, Search the DNSSL
	// options' domains: in order of arrival, each once, those of options
	// with a lifetime of 0 (withdrawn) left out.
	Nameservers []netip.Addr
	Search      []string
}

// DNS reads, without waiting, the RAs that arrived so far and returns
// their DNS options. Only RAs as the kernel would accept them count: from
// a link-local address, with hop limit 255 (RFC 4861 §6.1.2).
func (l *RAListener) DNS() (RADNS, error) {
	var out RADNS
	buf := make([]byte, 1<<16)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, from, err := unix.Recvmsg(l.fd, buf, oob, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK) {
			return out, nil
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("read router advertisements on %s: %w", l.ifname, err)
		}
		src, ok := from.(*unix.SockaddrInet6)
		if !ok || !netip.AddrFrom16(src.Addr).IsLinkLocalUnicast() || hopLimit(oob[:oobn]) != hopLimitNDP {
			continue
		}
		out.add(buf[:n], l.ifname)
	}
}

// hopLimit is the IPV6_HOPLIMIT of a received packet's control messages
// (-1 when absent).
func hopLimit(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return -1
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT && len(m.Data) >= 4 {
			return int(binary.NativeEndian.Uint32(m.Data))
		}
	}
	return -1
}

// add merges the DNS options of the ICMPv6 message b, if it is a valid
// router advertisement received on ifname (the zone of a link-local
// nameserver: resolv.conf needs it).
func (d *RADNS) add(b []byte, ifname string) {
	m, err := ndp.ParseMessage(b)
	if err != nil {
		return
	}
	ra, ok := m.(*ndp.RouterAdvertisement)
	if !ok {
		return
	}
	for _, o := range ra.Options {
		switch o := o.(type) {
		case *ndp.RecursiveDNSServer:
			if o.Lifetime <= 0 {
				continue
			}
			for _, s := range o.Servers {
				if s.IsLinkLocalUnicast() {
					s = s.WithZone(ifname)
				}
				if !slices.Contains(d.Nameservers, s) {
					d.Nameservers = append(d.Nameservers, s)
				}
			}
		case *ndp.DNSSearchList:
			if o.Lifetime <= 0 {
				continue
			}
			for _, name := range o.DomainNames {
				if name != "" && !slices.Contains(d.Search, name) {
					d.Search = append(d.Search, name)
				}
			}
		}
	}
}
