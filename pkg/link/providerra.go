package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/pkg/link/internal/nlraw"
)

// MovedRARouteHold bounds the lifetime of an RA-learned route the uplink's
// move puts on the provider bridge (see moveRARoutes): the time the bridge
// has to learn it again from a router advertisement. The bridge solicits
// one when it gets its carrier (every 4 s, then less often, until a router
// answers); routers answer within about 3 s (RFC 4861's rate limit of
// multicast RAs). A variable for tests only.
var MovedRARouteHold = 60 * time.Second

// raRoute is an RA-learned IPv6 route as an RTM_NEWROUTE of a route dump
// gives it: what moveRARoutes needs to make it again, which
// vishvananda/netlink v1.3.1 does not decode (the expiry, the router
// preference) or cannot send (RTA_EXPIRES).
type raRoute struct {
	table    uint32
	dst      netip.Prefix
	gw       netip.Addr
	oif      int
	priority uint32
	// pref is the RA's router preference (ICMPV6_ROUTER_PREF_*), hasPref
	// whether the kernel gave one.
	pref    uint8
	hasPref bool
	// expires is the remaining lifetime (0: none, the route does not
	// expire).
	expires time.Duration
	// metrics is the value of RTA_METRICS as the kernel sent it (the
	// RA's hop limit, its MTU), copied to the moved route as is.
	metrics []byte
}

func (r raRoute) String() string {
	return fmt.Sprintf("%s via %s metric %d", r.dst, r.gw, r.priority)
}

// userHZ is the unit of rta_cacheinfo's rta_expires: clock_t ticks, fixed
// at 100 a second in the kernel's ABI (USER_HZ).
const userHZ = 100

// raRoutesOf dumps the IPv6 routes of every table and returns the
// RA-learned (proto ra) unicast ones out of the link ifindex.
func raRoutesOf(ifindex int) ([]raRoute, error) {
	msgs, err := retryDump(func() ([][]byte, error) {
		req := nl.NewNetlinkRequest(unix.RTM_GETROUTE, unix.NLM_F_DUMP)
		req.AddData(&nl.RtMsg{RtMsg: unix.RtMsg{Family: unix.AF_INET6}})
		return req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWROUTE)
	})
	if err != nil {
		return nil, err
	}
	var rs []raRoute
	for _, m := range msgs {
		if r, ok := parseRARoute(m); ok && r.oif == ifindex {
			rs = append(rs, r)
		}
	}
	return rs, nil
}

// parseRARoute reads an RTM_NEWROUTE payload; ok is false for anything but
// an IPv6 unicast route learned from an RA with one next hop.
func parseRARoute(b []byte) (r raRoute, ok bool) {
	if len(b) < unix.SizeofRtMsg {
		return r, false
	}
	family, dstLen, table, proto, typ := b[0], int(b[1]), uint32(b[4]), b[5], b[7]
	if family != unix.AF_INET6 || proto != unix.RTPROT_RA || typ != unix.RTN_UNICAST {
		return r, false
	}
	r.table = table
	dst := netip.IPv6Unspecified()
	multipath := false
	nlraw.WalkAttrs(b[unix.SizeofRtMsg:], func(typ uint16, v []byte) bool {
		switch typ {
		case unix.RTA_TABLE:
			if len(v) == 4 {
				r.table = binary.NativeEndian.Uint32(v)
			}
		case unix.RTA_DST:
			if a, ok := netip.AddrFromSlice(v); ok {
				dst = a
			}
		case unix.RTA_GATEWAY:
			if a, ok := netip.AddrFromSlice(v); ok {
				r.gw = a
			}
		case unix.RTA_OIF:
			if len(v) == 4 {
				r.oif = int(binary.NativeEndian.Uint32(v))
			}
		case unix.RTA_PRIORITY:
			if len(v) == 4 {
				r.priority = binary.NativeEndian.Uint32(v)
			}
		case unix.RTA_PREF:
			if len(v) == 1 {
				r.pref, r.hasPref = v[0], true
			}
		case unix.RTA_CACHEINFO:
			// struct rta_cacheinfo: rta_expires (s32) at offset 8.
			if len(v) >= 12 {
				if e := int32(binary.NativeEndian.Uint32(v[8:])); e > 0 {
					r.expires = time.Duration(e) * time.Second / userHZ
				}
			}
		case unix.RTA_METRICS:
			r.metrics = append([]byte(nil), v...)
		case unix.RTA_MULTIPATH:
			multipath = true
		}
		return true
	})
	if multipath || dstLen > 128 {
		return r, false
	}
	r.dst = netip.PrefixFrom(dst, dstLen)
	return r, true
}

// moveRARoutes puts the uplink's RA-learned routes on the provider bridge
// brIndex and removes them from the uplink, so that the node keeps its
// default route while the bridge learns it again from the routers: before
// the next RA reaches the bridge (a second or more: routers rate-limit
// their RAs) the node would have none.
//
// The kernel does not let a route added over rtnetlink stand for one it
// learned: the RA code recognises its routes by flags (RTF_ADDRCONF,
// RTF_DEFAULT, RTF_ROUTEINFO) that rtnetlink cannot set. A moved route of
// the same metric and gateway makes the RA code's own route a duplicate
// (EEXIST): the kernel then refreshes the moved route's expiry, does not
// find its own, and drops the rest of every RA from that router ("RA:
// ndisc_router_discovery failed to add default route"): the bridge's SLAAC
// addresses would never be renewed again and the moved route never expire
// (6.18, measured). So the moved route gets a metric after the
// original's (the next one; the one after for a second route of the
// destination): the RA code adds its own beside it, which is preferred from
// the next RA on, and processes the rest of the RA; the moved one, proto
// ra with the same gateway, preference and metrics (RTA_METRICS), expires
// at the end of the original's remaining lifetime or after
// MovedRARouteHold, whichever is first, so a router that withdraws
// (router lifetime 0, which the RA code applies only to its own route) is
// not kept for long.
//
// Each moved route is added before the original is removed: the node
// always has one.
func moveRARoutes(brIndex int, routes []raRoute) error {
	c, err := nlraw.Open(nlraw.Options{ExtAck: true, Buf: make([]byte, 4096)})
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 0, 256)
	metrics := movedMetrics(routes)
	for i, r := range routes {
		metric := metrics[i]
		hold := MovedRARouteHold
		if r.expires > 0 {
			hold = min(hold, r.expires)
		}
		secs := uint32((hold + time.Second - 1) / time.Second)
		err := c.Request(raRouteRequest(buf[:0], c.Seq(), unix.RTM_NEWROUTE, unix.NLM_F_CREATE, brIndex, r, metric, secs), nil)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("move RA route %s: %w", r, err)
		}
		err = c.Request(raRouteRequest(buf[:0], c.Seq(), unix.RTM_DELROUTE, 0, r.oif, r, r.priority, 0), nil)
		if err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("remove RA route %s from the uplink: %w", r, err)
		}
	}
	return nil
}

// raRouteRequest appends to buf an RTM_NEWROUTE or RTM_DELROUTE (typ, with
// flags) of route r out of oif with metric priority, expiring after
// expires seconds (0: no RTA_EXPIRES).
func raRouteRequest(buf []byte, seq uint32, typ, flags uint16, oif int, r raRoute, priority, expires uint32) []byte {
	m := nlraw.NewMsg(buf)
	m.Begin(typ, unix.NLM_F_ACK|flags, seq)
	table := uint8(unix.RT_TABLE_COMPAT)
	if r.table < 256 {
		table = uint8(r.table)
	}
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol,
	// scope, type, flags (u32).
	m.Fixed([]byte{unix.AF_INET6, uint8(r.dst.Bits()), 0, 0, table, unix.RTPROT_RA, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0})
	m.AttrUint32(unix.RTA_TABLE, r.table)
	if r.dst.Bits() > 0 {
		a := r.dst.Addr().As16()
		m.Attr(unix.RTA_DST, a[:])
	}
	if r.gw.IsValid() {
		a := r.gw.As16()
		m.Attr(unix.RTA_GATEWAY, a[:])
	}
	m.AttrUint32(unix.RTA_OIF, uint32(oif))
	m.AttrUint32(unix.RTA_PRIORITY, priority)
	if typ == unix.RTM_NEWROUTE {
		if r.hasPref {
			m.Attr(unix.RTA_PREF, []byte{r.pref})
		}
		if len(r.metrics) > 0 {
			m.Attr(unix.RTA_METRICS, r.metrics)
		}
		if expires > 0 {
			m.AttrUint32(unix.RTA_EXPIRES, expires)
		}
	}
	return m.Bytes()
}

// movedMetrics are the metrics of the moved routes: each route's metric
// plus one, plus one more for each earlier route of the same table,
// destination and metric (a default route via each of two routers).
// IPv6 makes routes of one destination and metric that rtnetlink added
// siblings of a multipath route, which hashes flows over the routers; the
// RA code's routes never are (the kernel picks a router by reachability,
// which distinct metrics keep).
func movedMetrics(routes []raRoute) []uint32 {
	type dest struct {
		table, priority uint32
		dst             netip.Prefix
	}
	seen := map[dest]uint32{}
	ms := make([]uint32, len(routes))
	for i, r := range routes {
		k := dest{r.table, r.priority, r.dst}
		seen[k]++
		ms[i] = r.priority + seen[k]
	}
	return ms
}
