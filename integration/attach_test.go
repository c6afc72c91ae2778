package integration

import (
	"net/netip"
	"slices"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// requireAttached checks what a user checks after ADD: one address per
// range set, each in its subnet on a block of the configured size, the
// gateway the block's first host address, and the interface in the netns
// carrying the addresses and MAC of the result.
func requireAttached(t *testing.T, n *testNet, c *container, r *current.Result, blockSizes ...int) {
	t.Helper()
	got := addrs(t, r)
	if len(got) != len(blockSizes) {
		t.Fatalf("ADD %s: %d addresses %v, want one per range set (%d)", c.ID, len(got), got, len(blockSizes))
	}
	itf := sandboxInterface(t, r, c.NS.Path())
	if itf.Name != c.IfName {
		t.Errorf("ADD %s: container interface %q, want %q", c.ID, itf.Name, c.IfName)
	}
	for i, p := range got {
		subnet := n.subnet(t, i)
		if !subnet.Contains(p.Addr()) {
			t.Errorf("ADD %s: address %s not in the pool %s", c.ID, p, subnet)
		}
		if p.Bits() != blockSizes[i] {
			t.Errorf("ADD %s: address %s, want prefix length %d (the block size)", c.ID, p, blockSizes[i])
		}
		gw := p.Masked().Addr().Next()
		if gotGW, _ := netip.AddrFromSlice(r.IPs[i].Gateway); gotGW.Unmap() != gw {
			t.Errorf("ADD %s: gateway %v for %s, want %s (first host of the block)", c.ID, r.IPs[i].Gateway, p, gw)
		}
		if ip := r.IPs[i]; ip.Interface == nil || *ip.Interface < 0 || *ip.Interface >= len(r.Interfaces) ||
			r.Interfaces[*ip.Interface] != itf {
			t.Errorf("ADD %s: ips[%d].interface does not point at the container interface", c.ID, i)
		}
	}
	st, err := linkIn(t, c.NS, c.IfName)
	if err != nil {
		t.Fatal(err)
	}
	if st.MAC != itf.Mac {
		t.Errorf("%s in %s: MAC %s, result says %s", c.IfName, c.NS.name, st.MAC, itf.Mac)
	}
	for _, p := range got {
		if !slices.Contains(st.Addrs, p.String()) {
			t.Errorf("%s in %s: addresses %v, want %s there", c.IfName, c.NS.name, st.Addrs, p)
		}
	}
}

// requireLeased fails unless ipamd's state holds exactly the result's
// addresses for c.
func requireLeased(t *testing.T, d *ipamd, c *container, r *current.Result) {
	t.Helper()
	got := d.leasesOf(t, c.ID)
	slices.SortFunc(got, netip.Addr.Compare)
	if want := leaseAddrs(t, r); !slices.Equal(got, want) {
		t.Errorf("ipamd state for %s: %v, want %v", c.ID, got, want)
	}
}

// requireReach fails unless the containers reach each other's and their
// own gateway's address of family index i of their results.
func requireReach(t *testing.T, c1 *container, r1 *current.Result, c2 *container, r2 *current.Result, i int) {
	t.Helper()
	requirePing(t, c1.NS, r2.IPs[i].Address.IP)
	requirePing(t, c2.NS, r1.IPs[i].Address.IP)
	requirePing(t, c1.NS, r1.IPs[i].Gateway)
	requirePing(t, c2.NS, r2.IPs[i].Gateway)
}

// delAllThenNoLeases DELs every container (fatal on error; when, e.g.
// " after restart", is added to the message) and then requires ipamd to
// hold no lease.
func delAllThenNoLeases(t *testing.T, d *ipamd, when string, cs ...*container) {
	t.Helper()
	for _, c := range cs {
		if err := c.del(t); err != nil {
			t.Fatalf("DEL %s%s: %v", c.ID, when, err)
		}
	}
	d.requireNoLeases(t)
}

// TestIPv6Only attaches two containers to an IPv6-only network: both get an
// address of the same /64 block and reach each other and the gateway at once.
func TestIPv6Only(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ver string) {
		d := startIpamd(t)
		n := newNet(t, d, false)
		cni := newCNI(t)
		list := n.confList(t, ver)

		c1, c2 := newContainer(t, cni, list), newContainer(t, cni, list)
		r1, r2 := c1.mustAdd(t), c2.mustAdd(t)
		requireAttached(t, n, c1, r1, 64)
		requireAttached(t, n, c2, r2, 64)
		a1, a2 := addrs(t, r1)[0], addrs(t, r2)[0]
		if a1.Masked() != a2.Masked() {
			t.Errorf("containers on one node got different blocks: %s and %s", a1, a2)
		}
		if a1.Addr() == a2.Addr() {
			t.Fatalf("both containers got %s", a1)
		}
		requireLeased(t, d, c1, r1)
		requireLeased(t, d, c2, r2)

		requireReach(t, c1, r1, c2, r2, 0)
		delAllThenNoLeases(t, d, "", c1, c2)
	})
}

// TestDualStack attaches two containers to a dual-stack network: one address
// per family, each family reaching the other container and its gateway.
func TestDualStack(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ver string) {
		d := startIpamd(t)
		n := newNet(t, d, true)
		cni := newCNI(t)
		list := n.confList(t, ver)

		c1, c2 := newContainer(t, cni, list), newContainer(t, cni, list)
		r1, r2 := c1.mustAdd(t), c2.mustAdd(t)
		requireAttached(t, n, c1, r1, 64, 24)
		requireAttached(t, n, c2, r2, 64, 24)
		for i, want6 := range []bool{true, false} {
			if is6 := r1.IPs[i].Address.IP.To4() == nil; is6 != want6 {
				t.Errorf("ips[%d] = %v: IPv6 %v, want %v", i, r1.IPs[i].Address, is6, want6)
			}
		}
		requireLeased(t, d, c1, r1)
		requireLeased(t, d, c2, r2)

		for i := range r1.IPs {
			requireReach(t, c1, r1, c2, r2, i)
		}
		delAllThenNoLeases(t, d, "", c1, c2)
	})
}

// TestIPAMReAddReturnsSameAddresses calls ipam-v6 ADD twice for one
// attachment, as a runtime retrying an ADD does: the same addresses come
// back and nothing leaks.
func TestIPAMReAddReturnsSameAddresses(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ver string) {
		d := startIpamd(t)
		n := newNet(t, d, true)
		c := newContainer(t, nil, nil)

		r1, err := execIPAM(t, n, ver, "ADD", c)
		if err != nil {
			t.Fatalf("ipam-v6 ADD: %v", err)
		}
		t.Cleanup(func() {
			if _, err := execIPAM(t, n, ver, "DEL", c); err != nil {
				t.Errorf("cleanup: ipam-v6 DEL: %v", err)
			}
		})
		r2, err := execIPAM(t, n, ver, "ADD", c)
		if err != nil {
			t.Fatalf("ipam-v6 second ADD: %v", err)
		}
		if a, b := addrs(t, r1), addrs(t, r2); !slices.Equal(a, b) {
			t.Errorf("re-ADD returned %v, first ADD %v", b, a)
		}
		if len(r1.IPs) != 2 {
			t.Errorf("ipam-v6 ADD on a dual-stack pool: %d addresses, want 2", len(r1.IPs))
		}
		for _, itf := range r1.Interfaces {
			t.Errorf("ipam-v6 result has interface %v: an IPAM result carries none", itf)
		}
		requireLeased(t, d, c, r1)

		if _, err := execIPAM(t, n, ver, "DEL", c); err != nil {
			t.Fatalf("ipam-v6 DEL: %v", err)
		}
		d.requireNoLeases(t)
	})
}

// TestDelReleases checks that DEL frees the addresses, that a second DEL
// succeeds, and that DEL after the netns is gone still releases them.
func TestDelReleases(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ver string) {
		d := startIpamd(t)
		n := newNet(t, d, true)
		cni := newCNI(t)
		list := n.confList(t, ver)

		c1, c2 := newContainer(t, cni, list), newContainer(t, cni, list)
		r1, r2 := c1.mustAdd(t), c2.mustAdd(t)
		requireLeased(t, d, c1, r1)

		if err := c1.del(t); err != nil {
			t.Fatalf("DEL %s: %v", c1.ID, err)
		}
		if got := d.leasesOf(t, c1.ID); len(got) != 0 {
			t.Errorf("after DEL, ipamd still holds %v for %s", got, c1.ID)
		}
		requireLeased(t, d, c2, r2)
		if v := vethsInto(t, c1.NS); len(v) != 0 {
			t.Errorf("after DEL, veths left on the host: %v", v)
		}
		if err := c1.del(t); err != nil {
			t.Errorf("second DEL %s: %v (DEL must succeed when nothing is left)", c1.ID, err)
		}

		c2.NS.delete(t)
		if err := c2.del(t); err != nil {
			t.Fatalf("DEL %s after its netns was deleted: %v", c2.ID, err)
		}
		d.requireNoLeases(t)
	})
}

// TestCheck runs CHECK on a good attachment, then after removing the
// container's address by hand, when it must fail.
func TestCheck(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ver string) {
		d := startIpamd(t)
		n := newNet(t, d, false)
		cni := newCNI(t)
		c := newContainer(t, cni, n.confList(t, ver))
		r := c.mustAdd(t)

		if err := c.check(t); err != nil {
			t.Fatalf("CHECK on a good attachment: %v", err)
		}

		addr := r.IPs[0].Address
		if out, err := runIn(t, c.NS, "ip", "addr", "del", addr.String(), "dev", c.IfName); err != nil {
			t.Fatalf("ip addr del %s: %v: %s", addr.String(), err, out)
		}
		if err := c.check(t); err == nil {
			t.Errorf("CHECK passed after %s was removed from %s", addr.String(), c.IfName)
		}
	})
}

// TestFailedAddLeavesNothing makes ADD fail (the interface name is taken in
// the netns) and checks that no veth and no lease are left.
func TestFailedAddLeavesNothing(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ver string) {
		d := startIpamd(t)
		n := newNet(t, d, true)
		cni := newCNI(t)
		c := newContainer(t, cni, n.confList(t, ver))
		// A bridge, not a dummy: the kernel here has no dummy driver.
		if out, err := runIn(t, c.NS, "ip", "link", "add", c.IfName, "type", "bridge"); err != nil {
			t.Fatalf("create link %s in the netns: %v: %s", c.IfName, err, out)
		}

		if _, err := c.add(t); err == nil {
			t.Fatalf("ADD succeeded although %s exists in the netns", c.IfName)
		} else {
			t.Logf("ADD failed as it should: %v", err)
		}
		requireNothingLeft(t, d, n.Bridge, c.NS, c.IfName)
	})
}

// TestIpamdRestartKeepsState restarts ipamd on the same data dir: it serves
// the same leases, and a re-ADD returns the same addresses.
func TestIpamdRestartKeepsState(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ver string) {
		d := startIpamd(t)
		n := newNet(t, d, true)
		cni := newCNI(t)
		list := n.confList(t, ver)
		c1, c2 := newContainer(t, cni, list), newContainer(t, cni, list)
		r1 := c1.mustAdd(t)
		c2.mustAdd(t)
		before := d.leases(t)

		d.restart(t)

		if after := d.leases(t); !slices.Equal(before, after) {
			t.Errorf("leases after restart:\n%v\nbefore:\n%v", after, before)
		}
		r, err := execIPAM(t, n, ver, "ADD", c1)
		if err != nil {
			t.Fatalf("ipam-v6 re-ADD after restart: %v", err)
		}
		if a, b := addrs(t, r1), addrs(t, r); !slices.Equal(a, b) {
			t.Errorf("re-ADD after restart returned %v, ADD before %v", b, a)
		}
		if after := d.leases(t); !slices.Equal(before, after) {
			t.Errorf("leases after re-ADD:\n%v\nbefore:\n%v", after, before)
		}
		requirePing(t, c1.NS, r1.IPs[0].Gateway)

		delAllThenNoLeases(t, d, " after restart", c1, c2)
	})
}
