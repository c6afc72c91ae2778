package netlab

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
)

// Host is a machine behind the router, off the link: a netns whose "eth0"
// is a veth to the router, in a /64 of its own. Pods reach it only
// through their node and the router, and its answers find the pods by
// the routes the router learned by BGP: the far end of a connection
// through the routed network, as a server on the Internet is.
type Host struct {
	// NS is its netns; Addr6 its address, Gateway the router's on that
	// veth (its default route).
	NS             string
	Addr6, Gateway netip.Addr
}

// AddHost creates a host behind the router (Lab.Router): host k of the
// lab gets fd6e:<lab id>:<k>::2/64, the router ::1 on the veth "h<k>".
// It is removed with the lab.
func (r *Router) AddHost() (*Host, error) {
	l := r.lab
	k := int(l.hostSeq.Add(1)) - 1
	pfx := netip.MustParsePrefix(fmt.Sprintf("fd6e:%s:%s:%x::/64", l.ID[:4], l.ID[4:], k))
	a := pfx.Addr().As16()
	a[15] = 1
	gw := netip.AddrFrom16(a)
	a[15] = 2
	h := &Host{NS: l.netnsName("h" + strconv.Itoa(k)), Addr6: netip.AddrFrom16(a), Gateway: gw}
	l.track(h.NS)
	if err := createNetns(h.NS); err != nil {
		return nil, err
	}
	port := "h" + strconv.Itoa(k)
	for _, c := range [][]string{
		{"ip", "link", "add", "eth0", "netns", h.NS, "type", "veth", "peer", "name", port, "netns", r.NS},
		{"ip", "-n", r.NS, "addr", "add", netip.PrefixFrom(gw, 64).String(), "dev", port, "nodad"},
		{"ip", "-n", r.NS, "link", "set", port, "up"},
		{"ip", "-n", h.NS, "addr", "add", netip.PrefixFrom(h.Addr6, 64).String(), "dev", "eth0", "nodad"},
		{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
		{"ip", "-n", h.NS, "-6", "route", "add", "default", "via", gw.String(), "dev", "eth0"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("host behind the router: %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	return h, nil
}
