package renumber

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/link"
)

var (
	oldGW = netip.MustParseAddr("2001:db8:b1::1")
	newGW = netip.MustParseAddr("2001:db8:b2::1")
)

// lab is a router namespace with a bridge carrying the old and new
// blocks' gateways, and containers attached to it.
type lab struct {
	router ns.NetNS
	bridge string
}

// ctr is one container: its namespace, MAC and old and new addresses.
type ctr struct {
	netns    ns.NetNS
	mac      net.HardwareAddr
	old, new netip.Prefix
}

func newLab(t *testing.T) *lab {
	t.Helper()
	linktest.RequireRoot(t)
	l := &lab{router: linktest.NewNS(t), bridge: linktest.Name("v6nb")}
	linktest.Bridge(t, l.router, l.bridge)
	linktest.Do(t, l.router, func() error {
		br, err := netlink.LinkByName(l.bridge)
		if err != nil {
			return err
		}
		for _, gw := range []netip.Addr{oldGW, newGW} {
			a := &netlink.Addr{IPNet: link.IPNet(netip.PrefixFrom(gw, 64)), Flags: unix.IFA_F_NODAD}
			if err := netlink.AddrAdd(br, a); err != nil {
				return err
			}
		}
		return nil
	})
	return l
}

// container attaches container i: eth0 with the old address (with
// lifetimes when valid > 0, as SLAAC would give) and a default route via
// the old gateway.
func (l *lab) container(t *testing.T, i int, valid time.Duration) ctr {
	t.Helper()
	c := ctr{
		netns: linktest.NewNS(t),
		mac:   net.HardwareAddr{0x02, 0x76, 0x36, 0x01, byte(i >> 8), byte(i)},
		old:   netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xb1, 14: byte(i >> 8), 15: byte(i + 2)}), 64),
		new:   netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xb2, 14: byte(i >> 8), 15: byte(i + 2)}), 64),
	}
	linktest.Attach(t, l.router, l.bridge, linktest.Name("v6nh"), c.netns, "eth0", c.mac, nil)
	linktest.Do(t, c.netns, func() error {
		e, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		a := &netlink.Addr{IPNet: link.IPNet(c.old), Flags: unix.IFA_F_NODAD}
		if valid > 0 {
			a.ValidLft, a.PreferedLft = int(valid/time.Second), int(valid/time.Second)
		}
		if err := netlink.AddrAdd(e, a); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: e.Attrs().Index, Gw: oldGW.AsSlice(),
			Dst: link.IPNet(netip.MustParsePrefix("::/0"))})
	})
	return c
}

func (c ctr) job(mode string, validFor time.Duration) Job {
	return Job{Netns: c.netns.Path(), IfName: "eth0", MAC: c.mac, Old: c.old, New: c.new,
		OldGateway: oldGW, NewGateway: newGW, OldValidUntil: time.Now().Add(validFor), Mode: mode}
}

// state is what the container's eth0 holds: its addresses with their
// flags, and the default route's gateway.
type state struct {
	addrs map[netip.Addr]int // address → IFA flags
	gw    netip.Addr
}

func (c ctr) state(t *testing.T) state {
	t.Helper()
	s := state{addrs: map[netip.Addr]int{}}
	linktest.Do(t, c.netns, func() error {
		e, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(e, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			s.addrs[link.AddrFromIP(a.IP)] = a.Flags
		}
		routes, err := netlink.RouteList(e, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				s.gw = link.AddrFromIP(r.Gw)
			}
		}
		return nil
	})
	return s
}

// renumbered fails unless c has the new address usable, the old one
// deprecated and the default route via the new gateway.
func (c ctr) renumbered(t *testing.T) {
	t.Helper()
	s := c.state(t)
	nf, ok := s.addrs[c.new.Addr()]
	if !ok || nf&(unix.IFA_F_DEPRECATED|unix.IFA_F_TENTATIVE) != 0 {
		t.Errorf("%s: new address %s missing or not usable (flags %#x)", c.netns.Path(), c.new, nf)
	}
	of, ok := s.addrs[c.old.Addr()]
	if !ok || of&unix.IFA_F_DEPRECATED == 0 {
		t.Errorf("%s: old address %s missing or not deprecated (flags %#x)", c.netns.Path(), c.old, of)
	}
	if s.gw != newGW {
		t.Errorf("%s: default route via %s, want %s", c.netns.Path(), s.gw, newGW)
	}
}

// untouched fails unless c still has only its old address, preferred, and
// the default route via the old gateway.
func (c ctr) untouched(t *testing.T) {
	t.Helper()
	s := c.state(t)
	if _, ok := s.addrs[c.new.Addr()]; ok {
		t.Errorf("%s: new address %s added", c.netns.Path(), c.new)
	}
	if of, ok := s.addrs[c.old.Addr()]; !ok || of&unix.IFA_F_DEPRECATED != 0 {
		t.Errorf("%s: old address %s missing or deprecated (flags %#x)", c.netns.Path(), c.old, of)
	}
	if s.gw != oldGW {
		t.Errorf("%s: default route via %s, want %s", c.netns.Path(), s.gw, oldGW)
	}
}

// batches collects the workers' batches.
type batches struct {
	mu   sync.Mutex
	list []Batch
}

func (b *batches) add(x Batch) { b.mu.Lock(); b.list = append(b.list, x); b.mu.Unlock() }
func (b *batches) all() []Batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Batch(nil), b.list...)
}

func wait(t *testing.T, w *Workers) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := w.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestStaticJobs: static jobs renumber their containers in place; a job
// for a namespace whose interface has another MAC leaves it untouched
// (netns_mismatch), one for a namespace that is gone is counted
// netns_gone; the batch reports every job.
func TestStaticJobs(t *testing.T) {
	l := newLab(t)
	var ctrs []ctr
	for i := range 3 {
		ctrs = append(ctrs, l.container(t, i, 0))
	}
	stale := l.container(t, 3, 0)
	var got batches
	var errMu sync.Mutex
	reasons := map[Reason]int{}
	w := New(Config{OnBatch: got.add, OnError: func(r Reason) { errMu.Lock(); reasons[r]++; errMu.Unlock() }})
	defer w.Close()

	var jobs []Job
	for _, c := range ctrs {
		jobs = append(jobs, c.job("static", time.Minute))
	}
	mismatch := stale.job("", time.Minute)
	mismatch.MAC = ctrs[0].mac
	gone := ctrs[0].job("static", time.Minute)
	gone.Netns = filepath.Join(t.TempDir(), "no-such-netns")
	w.Submit(append(jobs, mismatch, gone)...)
	wait(t, w)

	for _, c := range ctrs {
		c.renumbered(t)
	}
	stale.untouched(t)
	st := w.Stats()
	if st.Done != 3 || st.Errors[NetnsMismatch] != 1 || st.Errors[NetnsGone] != 1 || len(st.Errors) != 2 || st.Pending != 0 {
		t.Errorf("stats %+v, want 3 done, 1 netns_mismatch, 1 netns_gone", st)
	}
	errMu.Lock()
	if reasons[NetnsMismatch] != 1 || reasons[NetnsGone] != 1 {
		t.Errorf("OnError got %v", reasons)
	}
	errMu.Unlock()
	b := got.all()
	if len(b) != 1 || b[0].Jobs != 5 || b[0].Failed != 2 || b[0].End.Before(b[0].Start) {
		t.Errorf("batches %+v, want one of 5 jobs, 2 failed", b)
	}

	// Submitted again (a restart): same state, no error.
	for _, c := range ctrs {
		w.Submit(c.job("static", time.Minute))
	}
	wait(t, w)
	for _, c := range ctrs {
		c.renumbered(t)
	}
	if st := w.Stats(); st.Done != 6 || len(st.Errors) != 2 {
		t.Errorf("stats after a second round %+v", st)
	}
}

// TestSelfConfiguringJobs: for slaac and dhcpv6 attachments the worker
// changes nothing at first and removes the old address at its valid end
// (here long before the kernel would: the address's own lifetime is an
// hour), or at once when that end is past; Close stops pending removals.
func TestSelfConfiguringJobs(t *testing.T) {
	l := newLab(t)
	slaac := l.container(t, 0, time.Hour)
	stateful := l.container(t, 1, time.Hour)
	later := l.container(t, 2, time.Hour)
	w := New(Config{})
	closed := false
	defer func() {
		if !closed {
			w.Close()
		}
	}()

	w.Submit(slaac.job("slaac", 2*time.Second))
	w.Submit(stateful.job("dhcpv6-stateful", -time.Second))
	w.Submit(later.job("dhcpv6-stateless", time.Hour))
	wait(t, w)
	slaac.untouched(t)
	later.untouched(t)

	for _, c := range []ctr{slaac, stateful} {
		linktest.Eventually(t, 20*time.Second, 100*time.Millisecond, "old address removed by the worker", func() (bool, string) {
			s := c.state(t)
			_, still := s.addrs[c.old.Addr()]
			return !still, fmt.Sprint(s.addrs)
		})
	}
	if st := w.Stats(); st.Timers != 1 || len(st.Errors) != 0 {
		t.Errorf("stats %+v, want the removal of one old address pending, no error", st)
	}
	w.Close()
	closed = true
	if st := w.Stats(); st.Timers != 0 {
		t.Errorf("Close left %d removal timers", st.Timers)
	}
	later.untouched(t)
}

// TestStaticJobTimes renumbers one container, then 50, and logs how long
// each batch took (first Submit → last job done: what pd_renumber_seconds
// measures on a node).
func TestStaticJobTimes(t *testing.T) {
	l := newLab(t)
	const n = 50
	ctrs := make([]ctr, n+1)
	for i := range ctrs {
		ctrs[i] = l.container(t, i, 0)
	}
	var got batches
	w := New(Config{OnBatch: got.add})
	defer w.Close()

	w.Submit(ctrs[0].job("static", time.Minute))
	wait(t, w)
	var jobs []Job
	for _, c := range ctrs[1:] {
		jobs = append(jobs, c.job("static", time.Minute))
	}
	w.Submit(jobs...)
	wait(t, w)
	for _, c := range ctrs {
		c.renumbered(t)
	}
	b := got.all()
	if len(b) != 2 || b[0].Jobs != 1 || b[1].Jobs != n || b[0].Failed+b[1].Failed != 0 {
		t.Fatalf("batches %+v, want 1 job then %d, none failed", b, n)
	}
	t.Logf("one static job: %s; %d static jobs, %d workers: %s", b[0].End.Sub(b[0].Start), n, 4, b[1].End.Sub(b[1].Start))
}
