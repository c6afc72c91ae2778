// Package model is the randomized model test of ipamd: random sequences of
// CNI verbs, requested and sticky addresses, ipamd restarts and kill -9,
// and etcd member outages over three real ipamd processes and a real
// three-member etcd cluster, on pool networks and on pd-ipam networks
// (every ipamd holds a prefix delegated by a real Kea DHCPv6 server), each
// step checked against a simple model of what every attachment and every
// sticky record holds, of which prefix each node holds, and against
// store.Check.
//
// V6CNI_MODEL_OPS sets the number of operations (default 1000, about 1200 requests, 1 min under -race: `make test`;
// `make soak` runs 50000). V6CNI_MODEL_SEED replays a run: a failing run
// prints its seed.
package model

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/v6cni/v6cni/internal/testutil/clustertest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/ipmath"
)

// deadline is what the plugins give one call to ipamd: every request must
// be answered (success or error) within it.
const deadline = ipamapi.DefaultTimeout

// faultWindow is how long after a fault (etcd member stop or start) a
// request may fail with code 11 or 50: an election, a client failing over.
const faultWindow = 8 * time.Second

// rng is one range of a network of the test.
type rng struct {
	subnet    netip.Prefix
	blockSize int
	exclude   []netip.Prefix
}

// network is one network configuration of the test.
type network struct {
	name    string
	sets    [][]rng // pool networks
	pd      bool    // a pd-ipam network: its /64 of each node's delegated prefix
	subnet  uint64  // pd-ipam subnetId
	sticky  bool
	request bool // ADDs may request addresses
	conf    map[string]any
}

func (n *network) config(extra map[string]any) json.RawMessage {
	c := map[string]any{}
	for k, v := range n.conf {
		c[k] = v
	}
	for k, v := range extra {
		c[k] = v
	}
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // static test data
	}
	return b
}

func newNetwork(name string, sticky, request bool, sets ...[]rng) *network {
	n := &network{name: name, sets: sets, sticky: sticky, request: request}
	var ranges [][]map[string]any
	for _, s := range sets {
		var rs []map[string]any
		for _, r := range s {
			m := map[string]any{"subnet": r.subnet.String(), "blockSize": r.blockSize}
			if len(r.exclude) > 0 {
				var ex []string
				for _, e := range r.exclude {
					ex = append(ex, e.String())
				}
				m["exclude"] = ex
			}
			rs = append(rs, m)
		}
		ranges = append(ranges, rs)
	}
	n.setConf(map[string]any{"type": "ipam-v6", "ranges": ranges})
	return n
}

// newPDNetwork is a pd-ipam network using subnet ID id of each node's
// delegated prefix.
func newPDNetwork(name string, id uint64, sticky bool) *network {
	n := &network{name: name, pd: true, subnet: id, sticky: sticky}
	n.setConf(map[string]any{"type": "pd-ipam", "subnetId": id})
	return n
}

func (n *network) setConf(ipam map[string]any) {
	if n.sticky {
		ipam["sticky"] = true
		// Far beyond any run (soak included): the model has no expiry.
		ipam["stickyGrace"] = "24h"
	}
	n.conf = map[string]any{"cniVersion": "1.1.0", "name": n.name, "type": "bridge-v6", "ipam": ipam}
}

// ranges is the number of addresses an ADD gets.
func (n *network) ranges() int {
	if n.pd {
		return 1
	}
	return len(n.sets)
}

func networks() []*network {
	p := netip.MustParsePrefix
	return []*network{
		// Small blocks (14 hosts): frequent claims; an excluded whole block
		// and an excluded address.
		newNetwork("v6small", false, true, []rng{{p("fd00:5a::/112"), 124,
			[]netip.Prefix{p("fd00:5a::30/124"), p("fd00:5a::45/128"), p("fd00:5a::52/127")}}}),
		// Sticky pods; two ranges in one set.
		newNetwork("v6sticky", true, false, []rng{{p("fd00:5b::/120"), 122, nil}, {p("fd00:5b:1::/112"), 120, nil}}),
		// Dual-stack.
		newNetwork("ds", false, true,
			[]rng{{p("fd00:5d::/112"), 122, []netip.Prefix{p("fd00:5d::40/122")}}},
			[]rng{{p("10.213.0.0/16"), 28, []netip.Prefix{p("10.213.0.16/30")}}}),
		// Delegated: each node's /64 number 1 of its /56.
		newPDNetwork("pd", 1, false),
		// Delegated and sticky: a pod back on another node cannot use
		// its record (another node's prefix).
		newPDNetwork("pdsticky", 2, true),
	}
}

// attachment is the model of one attachment.
type attachment struct {
	id    store.AttachmentID
	net   *network
	node  int
	addrs []netip.Addr // sorted
	pod   string       // "ns/name" on sticky networks
	// orphan: the runtime forgot it (no DEL); the next GC of its node and
	// network must release it.
	orphan bool
}

type stickyKey struct{ network, pod, ifname string }

type stickyRec struct {
	node  int
	addrs []netip.Addr
}

type tester struct {
	t     *testing.T
	c     *clustertest.Cluster
	r     *rand.Rand
	nets  []*network
	live  map[store.AttachmentID]*attachment
	gone  []store.AttachmentID // deleted: CHECK must fail, DEL must succeed
	stick map[stickyKey]*stickyRec
	seq   int
	// lastFault is when the last etcd member stopped or started.
	lastFault time.Time
	down      int // index of the stopped etcd member, or -1

	// pdPrefix is the prefix each node was delegated at the start: it
	// must keep it across restarts and kill -9.
	pdPrefix []netip.Prefix

	stats map[string]int
	// dups and leaks count the problems of these two kinds.
	dups, leaks int
	// burstStuck collects, during a burst, the attachments whose DEL
	// kept their addresses for their pod: concurrent DELs of one pod's
	// attachments race for its record.
	burstStuck map[stickyKey][]*attachment
	// requests counts every request sent to an ipamd.
	requests int
	slowest  time.Duration
	slowOp   string
	probs    []string
	step     int
	lastOp   string
}

func (m *tester) problem(format string, args ...any) {
	msg := fmt.Sprintf("step %d (%s): ", m.step, m.lastOp) + fmt.Sprintf(format, args...)
	m.probs = append(m.probs, msg)
	m.t.Error(msg)
}

// count counts an operation of kind, and also as pd-<kind> when it is on a
// pd-ipam network.
func (m *tester) count(kind string, n *network) {
	m.stats[kind]++
	if n != nil && n.pd {
		m.stats["pd-"+kind]++
	}
}

// timed runs one request with the plugins' deadline and asserts that it
// was answered within it.
func (m *tester) timed(op string, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	m.requests++
	err := fn(ctx)
	d := time.Since(start)
	if d > m.slowest {
		m.slowest, m.slowOp = d, op
	}
	if d >= deadline {
		m.problem("%s not answered within %v (took %v): %v", op, deadline, d, err)
	}
	return err
}

func code(err error) int {
	var e *types.Error
	if errors.As(err, &e) {
		return int(e.Code)
	}
	return -1
}

// tolerated reports whether err is an acceptable answer now: code 11 or 50
// shortly after an etcd fault.
func (m *tester) tolerated(err error) bool {
	c := code(err)
	return (c == int(types.ErrTryAgainLater) || c == 50) && time.Since(m.lastFault) < faultWindow
}

func (m *tester) req(a *attachment, extra map[string]any, args string) *ipamapi.Request {
	return &ipamapi.Request{Network: a.net.name, ContainerID: a.id.ContainerID, IfName: a.id.IfName,
		Args: args, Config: a.net.config(extra)}
}

func podArgs(pod string) string {
	if pod == "" {
		return ""
	}
	ns, name, _ := strings.Cut(pod, "/")
	return "K8S_POD_NAMESPACE=" + ns + ";K8S_POD_NAME=" + name
}

func resultAddrs(res *current.Result) []netip.Addr {
	var out []netip.Addr
	for _, ip := range res.IPs {
		a, _ := netip.AddrFromSlice(ip.Address.IP)
		out = append(out, a.Unmap())
	}
	sortAddrs(out)
	return out
}

func sortAddrs(a []netip.Addr) { slices.SortFunc(a, func(x, y netip.Addr) int { return x.Compare(y) }) }

func (m *tester) snapshot() *store.Snapshot {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		probs, snap, err := m.c.Check(ctx)
		if err != nil {
			if ctx.Err() != nil {
				m.t.Fatalf("step %d: read key space: %v", m.step, err)
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for _, p := range probs {
			m.problem("store.Check: %s", p)
		}
		return snap
	}
}

// verify compares the key space with the model: every address held by
// exactly the attachment (or sticky record) the model says, nothing else.
func (m *tester) verify() *store.Snapshot {
	snap := m.snapshot()
	want := map[netip.Addr]store.AttachmentID{}
	for _, a := range m.live {
		for _, ad := range a.addrs {
			if prev, dup := want[ad]; dup {
				m.dups++
				m.problem("model: %s given to both %s and %s", ad, prev, a.id)
			}
			want[ad] = a.id
		}
	}
	for k, s := range m.stick {
		for _, ad := range s.addrs {
			want[ad] = store.AttachmentID{Network: k.network, ContainerID: "sticky:" + k.pod, IfName: k.ifname}
		}
	}
	for ad, id := range want {
		if got, ok := snap.Addrs[ad]; !ok {
			m.problem("%s should be held by %s, is free", ad, id)
		} else if got != id {
			m.problem("%s should be held by %s, is held by %s", ad, id, got)
		}
	}
	for ad, got := range snap.Addrs {
		if _, ok := want[ad]; !ok {
			m.leaks++
			m.problem("%s is held by %s, which the model says holds nothing (leak)", ad, got)
		}
	}
	handles := map[store.AttachmentID]store.Handle{}
	for _, h := range snap.Handles {
		handles[h.AttachmentID] = h
		if _, ok := m.live[h.AttachmentID]; !ok {
			m.problem("handle %s exists, model has no such attachment", h.AttachmentID)
		}
	}
	for id, a := range m.live {
		h, ok := handles[id]
		if !ok {
			m.problem("attachment %s has no handle", id)
			continue
		}
		if h.Node != m.c.Nodes[a.node].Name {
			m.problem("handle %s on node %s, model says %s", id, h.Node, m.c.Nodes[a.node].Name)
		}
		var got []netip.Addr
		for _, ip := range h.IPs {
			got = append(got, ip.Address.Addr())
		}
		sortAddrs(got)
		if !slices.Equal(got, a.addrs) {
			m.problem("handle %s lists %v, model %v", id, got, a.addrs)
		}
	}
	if len(snap.Stickies) != len(m.stick) {
		m.problem("%d sticky records, model has %d", len(snap.Stickies), len(m.stick))
	}
	for _, st := range snap.Stickies {
		want := m.stick[stickyKey{st.Network, st.Pod, st.IfName}]
		if want == nil {
			m.problem("sticky record of %s/%s on %s exists, model has none", st.Pod, st.IfName, st.Network)
			continue
		}
		if got := stickyAddrs(st); st.Node != m.c.Nodes[want.node].Name || !slices.Equal(got, want.addrs) {
			m.problem("sticky record of %s/%s on %s: node %s %v, model node %s %v",
				st.Pod, st.IfName, st.Network, st.Node, got, m.c.Nodes[want.node].Name, want.addrs)
		}
	}
	m.verifyPDBlocks(snap)
	return snap
}

func stickyAddrs(st store.Sticky) []netip.Addr {
	var out []netip.Addr
	for _, ip := range st.IPs {
		out = append(out, ip.Address.Addr())
	}
	sortAddrs(out)
	return out
}

// verifyPDBlocks: every block of a pd-ipam network is its node's /64 of
// the prefix delegated to that node.
func (m *tester) verifyPDBlocks(snap *store.Snapshot) {
	for _, b := range snap.Blocks {
		n := m.netByName(b.Network)
		if n == nil || !n.pd {
			if b.Source == "pd" {
				m.problem("block %s of %s has source pd, the network is no pd-ipam network", b.CIDR, b.Network)
			}
			continue
		}
		node := m.nodeIndex(b.Node)
		if node < 0 {
			m.problem("pd block %s of %s belongs to unknown node %q", b.CIDR, b.Network, b.Node)
			continue
		}
		if want := m.pdSubnet(n, node); b.CIDR != want || b.Source != "pd" {
			m.problem("pd block %s (source %q) of %s on %s, want %s of its prefix %s (source pd)",
				b.CIDR, b.Source, b.Network, b.Node, want, m.pdPrefix[node])
		}
	}
}

func (m *tester) nodeIndex(name string) int {
	for i, n := range m.c.Nodes {
		if n.Name == name {
			return i
		}
	}
	return -1
}

// pdSubnet is n's /64 on node: subnet ID n.subnet of the node's prefix.
func (m *tester) pdSubnet(n *network, node int) netip.Prefix {
	sub, ok := ipmath.Subnet(m.pdPrefix[node], 64, n.subnet)
	if !ok {
		m.t.Fatalf("subnet %d does not fit %s", n.subnet, m.pdPrefix[node])
	}
	return sub
}

// checkPD asserts that node holds the prefix it was delegated at the
// start, and that its binding in etcd (what a restarted ipamd renews)
// names that prefix.
func (m *tester) checkPD(node int) {
	n := m.c.Nodes[node]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	held, err := n.DelegatedPrefix(ctx)
	if err != nil {
		m.problem("ipamd pd on %s: %v", n.Name, err)
		return
	}
	if held != m.pdPrefix[node] {
		m.problem("%s holds %s, was delegated %s: the binding did not survive", n.Name, held, m.pdPrefix[node])
	}
	for {
		stored, err := m.c.StoredPrefixes(ctx, n)
		if err != nil {
			if ctx.Err() != nil {
				m.t.Fatalf("step %d: read the PD binding of %s: %v", m.step, n.Name, err)
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if len(stored) != 1 || stored[0] != m.pdPrefix[node] {
			m.problem("the stored PD binding of %s lists %v, want %s", n.Name, stored, m.pdPrefix[node])
		}
		m.stats["pd-prefix-kept"]++
		return
	}
}

func (m *tester) blockOf(snap *store.Snapshot, a netip.Addr) *store.Block {
	for i := range snap.Blocks {
		if snap.Blocks[i].CIDR.Contains(a) {
			return &snap.Blocks[i]
		}
	}
	return nil
}

// validAddrs checks an ADD's answer: one address per range set, in the
// set, not excluded, a host address of a block of the attachment's node.
func (m *tester) validAddrs(snap *store.Snapshot, a *attachment, addrs []netip.Addr) {
	if len(addrs) != a.net.ranges() {
		m.problem("ADD %s: %d addresses %v, want one per range set (%d)", a.id, len(addrs), addrs, a.net.ranges())
		return
	}
	if a.net.pd {
		// In the prefix delegated to this node: its /64 of it, a host
		// address of the node's block.
		sub := m.pdSubnet(a.net, a.node)
		for _, ad := range addrs {
			b := m.blockOf(snap, ad)
			switch {
			case !sub.Contains(ad) || !ipmath.IsHost(sub, ad):
				m.problem("ADD %s on %s: %s is not a host address of %s, subnet %d of its delegated prefix %s",
					a.id, m.c.Nodes[a.node].Name, ad, sub, a.net.subnet, m.pdPrefix[a.node])
			case b == nil:
				m.problem("ADD %s: %s in no block", a.id, ad)
			case b.Node != m.c.Nodes[a.node].Name || b.CIDR != sub:
				m.problem("ADD %s on %s: %s in block %s of %s", a.id, m.c.Nodes[a.node].Name, ad, b.CIDR, b.Node)
			}
		}
		return
	}
	for _, ad := range addrs {
		var in *rng
		for _, s := range a.net.sets {
			for i := range s {
				if s[i].subnet.Contains(ad) {
					in = &s[i]
				}
			}
		}
		if in == nil {
			m.problem("ADD %s: %s is in no range of the network", a.id, ad)
			continue
		}
		for _, e := range in.exclude {
			if e.Contains(ad) {
				m.problem("ADD %s: %s is excluded (%s)", a.id, ad, e)
			}
		}
		b := m.blockOf(snap, ad)
		switch {
		case b == nil:
			m.problem("ADD %s: %s in no block", a.id, ad)
		case b.Node != m.c.Nodes[a.node].Name:
			m.problem("ADD %s on %s: %s in block %s of %s", a.id, m.c.Nodes[a.node].Name, ad, b.CIDR, b.Node)
		case b.CIDR.Bits() != in.blockSize || !ipmath.IsHost(b.CIDR, ad):
			m.problem("ADD %s: %s not a host address of a /%d block (%s)", a.id, ad, in.blockSize, b.CIDR)
		}
	}
}

func (m *tester) pick() *attachment {
	var ids []store.AttachmentID
	for id, a := range m.live {
		if !a.orphan {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	slices.SortFunc(ids, func(x, y store.AttachmentID) int { return strings.Compare(x.String(), y.String()) })
	return m.live[ids[m.r.IntN(len(ids))]]
}

func (m *tester) newAttachment() *attachment {
	m.seq++
	n := m.nets[m.r.IntN(len(m.nets))]
	a := &attachment{
		id:   store.AttachmentID{Network: n.name, ContainerID: fmt.Sprintf("c%05d", m.seq), IfName: "eth0"},
		net:  n,
		node: m.r.IntN(len(m.c.Nodes)),
	}
	if m.r.IntN(5) == 0 {
		a.id.IfName = "net1"
	}
	if n.sticky {
		// Few names: pods come back, on any node, and twins (one pod
		// name alive twice) happen.
		a.pod = fmt.Sprintf("ns/web-%d", m.r.IntN(6))
	}
	return a
}

// twin reports whether another live attachment has a's pod name and
// interface on its network.
func (m *tester) twin(a *attachment) bool {
	for _, o := range m.live {
		if o != a && o.net == a.net && o.pod != "" && o.pod == a.pod && o.id.IfName == a.id.IfName {
			return true
		}
	}
	return false
}

// add sends ADD for a and updates the model from the answer; wantErr > 0
// asserts that code instead, wantErr < 0 that code or success. It returns false when the answer was a
// tolerated failure (the attachment is then maybe allocated).
func (m *tester) add(a *attachment, requested []netip.Addr, wantErr int) bool {
	snap := m.snapshotQuiet()
	extra := map[string]any{}
	if len(requested) > 0 {
		var s []string
		for _, r := range requested {
			s = append(s, r.String())
		}
		extra["args"] = map[string]any{"cni": map[string]any{"ips": s}}
	}
	var res *current.Result
	err := m.timed("ADD", func(ctx context.Context) error {
		var err error
		res, err = m.c.Nodes[a.node].Client.Add(ctx, m.req(a, extra, podArgs(a.pod)))
		return err
	})
	if err != nil {
		if wantErr != 0 && code(err) == max(wantErr, -wantErr) {
			m.stats["add-refused"]++
			return true
		}
		if m.tolerated(err) {
			m.stats["tolerated-error"]++
			return false
		}
		m.problem("ADD %s on %s: %v", a.id, m.c.Nodes[a.node].Name, err)
		return true
	}
	got := resultAddrs(res)
	if wantErr > 0 {
		m.problem("ADD %s requesting %v: got %v, want error code %d", a.id, requested, got, wantErr)
	}
	prev := m.live[a.id]
	var expect []netip.Addr
	key := stickyKey{a.net.name, a.pod, a.id.IfName}
	st := m.stick[key]
	switch {
	case prev != nil:
		expect = prev.addrs
	case snapHandle(snap, a.id) != nil:
		// A maybe-allocated attachment: the stored answer stands.
		for _, ip := range snapHandle(snap, a.id).IPs {
			expect = append(expect, ip.Address.Addr())
		}
		sortAddrs(expect)
	case a.net.sticky && st != nil && st.node == a.node:
		expect = st.addrs
	}
	if expect != nil && !slices.Equal(got, expect) {
		m.problem("ADD %s: got %v, want %v", a.id, got, expect)
	}
	if len(requested) > 0 {
		for _, r := range requested {
			if !slices.Contains(got, r) {
				m.problem("ADD %s requesting %s: got %v", a.id, r, got)
			}
		}
	}
	if prev == nil && a.net.sticky && a.pod != "" && len(requested) == 0 && st != nil {
		// The pod is back: the record goes either way. On its node the
		// ADD takes its addresses (checked above); elsewhere they are in
		// another node's blocks, so the record is released and the ADD
		// gets new ones.
		delete(m.stick, key)
		if st.node == a.node {
			m.stats["sticky-reused"]++
		} else {
			m.stats["sticky-released-elsewhere"]++
		}
	}
	if prev == nil && a.net.sticky && a.pod != "" && m.twin(a) {
		m.stats["sticky-twin"]++
	}
	// Freshly picked addresses must be free in the model.
	if prev == nil {
		for _, o := range m.live {
			for _, ad := range got {
				if slices.Contains(o.addrs, ad) {
					m.dups++
					m.problem("ADD %s got %s, which %s holds", a.id, ad, o.id)
				}
			}
		}
		for k, s := range m.stick {
			for _, ad := range got {
				if slices.Contains(s.addrs, ad) {
					m.dups++
					m.problem("ADD %s got %s, kept for sticky pod %s", a.id, ad, k.pod)
				}
			}
		}
	}
	if prev == nil {
		m.validAddrs(m.snapshotQuiet(), a, got)
	}
	a.addrs = got
	m.live[a.id] = a
	return true
}

// snapshotQuiet reads the key space without checking it (for expectations).
func (m *tester) snapshotQuiet() *store.Snapshot {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		snap, err := store.New(m.c.Etcd).Snapshot(ctx)
		if err == nil {
			return snap
		}
		if ctx.Err() != nil {
			m.t.Fatalf("step %d: read key space: %v", m.step, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func snapHandle(snap *store.Snapshot, id store.AttachmentID) *store.Handle {
	for i := range snap.Handles {
		if snap.Handles[i].AttachmentID == id {
			return &snap.Handles[i]
		}
	}
	return nil
}

// del sends DEL for a and updates the model; false on a tolerated failure.
func (m *tester) del(a *attachment) bool {
	err := m.timed("DEL", func(ctx context.Context) error {
		return m.c.Nodes[a.node].Client.Del(ctx, m.req(a, nil, podArgs(a.pod)))
	})
	if err != nil {
		if m.tolerated(err) {
			m.stats["tolerated-error"]++
			return false
		}
		m.problem("DEL %s: %v", a.id, err)
		return true
	}
	m.forgetAttachment(a, true)
	return true
}

// forgetAttachment removes a from the model as DEL (sticky: keeps its
// addresses for the pod) or GC (released) does.
func (m *tester) forgetAttachment(a *attachment, viaDel bool) {
	if _, ok := m.live[a.id]; !ok {
		return
	}
	delete(m.live, a.id)
	m.gone = append(m.gone, a.id)
	if viaDel && a.net.sticky && a.pod != "" {
		// The pod's most recent attachment is what its record keeps: a
		// record already there (a twin's, or the pod's on another node)
		// is replaced, and what only it kept is released, not leaked.
		key := stickyKey{a.net.name, a.pod, a.id.IfName}
		if m.stick[key] != nil {
			m.stats["sticky-replaced"]++
		}
		m.stick[key] = &stickyRec{node: a.node, addrs: a.addrs}
		if m.burstStuck != nil {
			m.burstStuck[key] = append(m.burstStuck[key], a)
		}
	}
}

// settle repeats op until it is answered without a tolerated error.
func (m *tester) settle(what string, op func() bool) {
	for i := 0; !op(); i++ {
		if i == 40 {
			m.problem("%s still failing %v after the fault", what, faultWindow)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (m *tester) gc(node int, n *network) {
	var valid []map[string]string
	for _, a := range m.live {
		if a.net == n && a.node == node && !a.orphan {
			valid = append(valid, map[string]string{"containerID": a.id.ContainerID, "ifname": a.id.IfName})
		}
	}
	if valid == nil {
		valid = []map[string]string{}
	}
	extra := map[string]any{"cni.dev/valid-attachments": valid}
	err := m.timed("GC", func(ctx context.Context) error {
		return m.c.Nodes[node].Client.GC(ctx, &ipamapi.Request{Network: n.name, Config: n.config(extra)})
	})
	if err != nil {
		if m.tolerated(err) {
			m.stats["tolerated-error"]++
			return
		}
		m.problem("GC %s on %s: %v", n.name, m.c.Nodes[node].Name, err)
		return
	}
	for _, a := range m.live {
		if a.net == n && a.node == node && a.orphan {
			m.forgetAttachment(a, false)
			m.stats["gc-released"]++
		}
	}
}

// requestable picks an address to request for a on node and the error
// code the ADD must answer (0: success; negative: that code or success).
func (m *tester) requestable(snap *store.Snapshot, a *attachment) (netip.Addr, int) {
	set := a.net.sets[m.r.IntN(len(a.net.sets))]
	r := set[m.r.IntN(len(set))]
	var cand netip.Addr
	if m.r.IntN(2) == 0 {
		// An address of one of the node's own blocks, or another's.
		var bs []store.Block
		for _, b := range snap.Blocks {
			if b.Network == a.net.name && r.subnet.Contains(b.CIDR.Addr()) {
				bs = append(bs, b)
			}
		}
		if len(bs) > 0 {
			b := bs[m.r.IntN(len(bs))]
			cand = offset(b.CIDR.Addr(), m.r.IntN(1<<(b.CIDR.Addr().BitLen()-b.CIDR.Bits())))
		}
	}
	if !cand.IsValid() {
		// Anywhere in the first 4096 addresses of the range.
		cand = offset(r.subnet.Addr(), m.r.IntN(4096))
	}
	for _, e := range r.exclude {
		if e.Contains(cand) {
			return cand, int(types.ErrInvalidNetworkConfig)
		}
	}
	cidr := netip.PrefixFrom(cand, r.blockSize).Masked()
	if !ipmath.IsHost(cidr, cand) {
		return cand, int(types.ErrInvalidNetworkConfig)
	}
	if b := m.blockOf(snap, cand); b != nil && b.Node != m.c.Nodes[a.node].Name {
		// Unless the owner gives the block back (empty, after
		// --block-grace) before the ADD: then the ADD claims it.
		return cand, -int(types.ErrTryAgainLater)
	}
	if _, taken := snap.Addrs[cand]; taken {
		return cand, int(types.ErrTryAgainLater)
	}
	return cand, 0
}

func offset(a netip.Addr, n int) netip.Addr {
	b := a.AsSlice()
	carry := n
	for i := len(b) - 1; i >= 0 && carry > 0; i-- {
		s := int(b[i]) + carry
		b[i] = byte(s)
		carry = s >> 8
	}
	out, _ := netip.AddrFromSlice(b)
	return out
}

// killDuring kills node's ipamd while an ADD or DEL is in flight, restarts
// it, and settles the in-flight request.
func (m *tester) killDuring(a *attachment, isDel bool) {
	node := m.c.Nodes[a.node]
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		// Its answer does not matter: the request is settled below.
		if isDel {
			_ = node.Client.Del(ctx, m.req(a, nil, podArgs(a.pod)))
		} else {
			_, _ = node.Client.Add(ctx, m.req(a, nil, podArgs(a.pod)))
		}
	}()
	time.Sleep(time.Duration(m.r.IntN(20000)) * time.Microsecond)
	node.Kill()
	wg.Wait()
	m.stats["kill-9"]++
	m.count("kill-9-during", a.net)
	if err := node.Start(); err != nil {
		m.t.Fatalf("step %d: restart %s after kill -9: %v", m.step, node.Name, err)
	}
	m.checkPD(a.node)
	// Whatever the in-flight request did (committed or not), repeating
	// it must give the answer the model expects.
	if isDel {
		m.settle("DEL after kill -9", func() bool { return m.del(a) })
	} else {
		m.settle("ADD after kill -9", func() bool { return m.add(a, nil, 0) })
	}
}

func TestModel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (CI runs as root): ipamd and etcd run as real processes")
	}
	ops := 1000
	if s := os.Getenv("V6CNI_MODEL_OPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("V6CNI_MODEL_OPS=%q: %v", s, err)
		}
		ops = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("V6CNI_MODEL_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("V6CNI_MODEL_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("seed %d (replay: V6CNI_MODEL_SEED=%d V6CNI_MODEL_OPS=%d go test -run TestModel ./integration/model/)", seed, seed, ops)
	start := time.Now()
	m := &tester{
		t: t,
		// Empty blocks go back to the pool within seconds, while ADDs
		// claim blocks: the release races the allocations.
		// Every ipamd has a DHCPv6-PD uplink to a real Kea, for the
		// pd-ipam networks.
		c: clustertest.Start(t, clustertest.Options{Members: 3, Nodes: 3,
			IpamdArgs: []string{"--gc-interval", "1s", "--block-grace", "2s"},
			PD:        &clustertest.PDOptions{}}),
		r:     rand.New(rand.NewPCG(seed, seed^0x5eed)),
		nets:  networks(),
		live:  map[store.AttachmentID]*attachment{},
		stick: map[stickyKey]*stickyRec{},
		stats: map[string]int{},
		down:  -1,
	}
	pdCtx, pdCancel := context.WithTimeout(context.Background(), time.Minute)
	for _, n := range m.c.Nodes {
		p, err := n.DelegatedPrefix(pdCtx)
		if err != nil {
			t.Fatal(err)
		}
		for j, q := range m.pdPrefix {
			if q.Overlaps(p) {
				t.Fatalf("%s and %s were both delegated %s", m.c.Nodes[j].Name, n.Name, p)
			}
		}
		m.pdPrefix = append(m.pdPrefix, p)
		t.Logf("%s: delegated prefix %s on %s", n.Name, p, n.PDInterface)
	}
	pdCancel()
	defer func() {
		var kinds []string
		for k, v := range m.stats {
			kinds = append(kinds, fmt.Sprintf("%s=%d", k, v))
		}
		sort.Strings(kinds)
		t.Logf("ops by kind: %s", strings.Join(kinds, " "))
		released := 0
		for _, n := range m.c.Nodes {
			b, _ := os.ReadFile(n.LogPath())
			released += strings.Count(string(b), "released empty block")
		}
		t.Logf("model summary: seed=%d requests=%d blocks-released=%d steps=%d live=%d sticky=%d problems=%d duplicates=%d leaks=%d slowest=%v (%s) elapsed=%v",
			seed, m.requests, released, min(m.step, ops), len(m.live), len(m.stick), len(m.probs), m.dups, m.leaks,
			m.slowest.Round(time.Millisecond), m.slowOp, time.Since(start).Round(time.Second))
		if len(m.probs) > 0 {
			t.Logf("FAILED with seed %d: replay with V6CNI_MODEL_SEED=%d V6CNI_MODEL_OPS=%d go test -run TestModel ./integration/model/",
				seed, seed, m.step)
		}
	}()

	for m.step = 1; m.step <= ops; m.step++ {
		m.one()
		m.verify()
		if len(m.probs) > 20 {
			t.Fatalf("too many problems, stopping")
		}
		if len(m.probs) > 0 {
			t.FailNow()
		}
	}
	// The end: bring every member back, GC everything on every node with
	// an empty valid list after forgetting all: nothing must stay but the
	// sticky records.
	if m.down >= 0 {
		m.etcdStart()
	}
	for _, a := range m.live {
		a.orphan = true
	}
	for i := range m.c.Nodes {
		for _, n := range m.nets {
			m.lastOp = "final GC"
			m.gc(i, n)
		}
	}
	snap := m.verify()
	for i := range m.c.Nodes {
		m.checkPD(i)
	}
	if len(m.live) != 0 {
		t.Errorf("after the final GC the model still holds %d attachments", len(m.live))
	}
	for a, id := range snap.Addrs {
		if !strings.HasPrefix(id.ContainerID, "sticky:") {
			t.Errorf("after the final GC %s is still held by %s", a, id)
		}
	}
}

func (m *tester) etcdStart() {
	mem := m.c.Members[m.down]
	if err := mem.Start(); err != nil {
		m.t.Fatalf("step %d: start etcd %s: %v", m.step, mem.Name, err)
	}
	m.down = -1
	m.lastFault = time.Now()
	m.stats["etcd-start"]++
}

// one runs one random operation.
func (m *tester) one() {
	w := m.r.IntN(1000)
	a := m.pick()
	// Crowded: ADDs become DELs, so the live set stays bounded.
	if len(m.live) > 150 && (w < 300 || (w >= 880 && w < 920)) {
		w = 500
	}
	crowded := len(m.live) > 150
	switch {
	case w < 300 && !crowded:
		m.lastOp = "add"
		na := m.newAttachment()
		m.count("add", na.net)
		m.settle("ADD", func() bool { return m.add(na, nil, 0) })
	case w < 380 && a != nil:
		m.lastOp = "add-again"
		m.count("add-again", a.net)
		m.settle("ADD again", func() bool { return m.add(a, nil, 0) })
	case w < 440:
		m.lastOp = "add-requested"
		m.stats["add-requested"]++
		na := m.newAttachment()
		for !na.net.request {
			na = m.newAttachment()
		}
		snap := m.snapshotQuiet()
		want, wantErr := m.requestable(snap, na)
		m.lastOp = fmt.Sprintf("add-requested %s want code %d", want, wantErr)
		m.settle("ADD requested", func() bool { return m.add(na, []netip.Addr{want}, wantErr) })
	case w < 640 && a != nil:
		m.lastOp = "del " + a.id.String()
		m.count("del", a.net)
		m.settle("DEL", func() bool { return m.del(a) })
	case w < 660 && len(m.gone) > 0:
		m.lastOp = "del-gone"
		id := m.gone[m.r.IntN(len(m.gone))]
		if _, back := m.live[id]; back {
			return
		}
		n := m.netByName(id.Network)
		m.count("del-gone", n)
		err := m.timed("DEL", func(ctx context.Context) error {
			return m.c.Nodes[m.r.IntN(len(m.c.Nodes))].Client.Del(ctx,
				&ipamapi.Request{Network: id.Network, ContainerID: id.ContainerID, IfName: id.IfName, Config: n.config(nil)})
		})
		if err != nil && !m.tolerated(err) {
			m.problem("DEL of deleted %s: %v (must be repeatable)", id, err)
		}
	case w < 760 && a != nil:
		m.lastOp = "check " + a.id.String()
		m.count("check", a.net)
		err := m.timed("CHECK", func(ctx context.Context) error {
			return m.c.Nodes[a.node].Client.Check(ctx, m.req(a, nil, podArgs(a.pod)))
		})
		if err != nil && !m.tolerated(err) {
			m.problem("CHECK %s: %v", a.id, err)
		}
	case w < 780 && len(m.gone) > 0:
		m.lastOp = "check-gone"
		id := m.gone[m.r.IntN(len(m.gone))]
		if _, back := m.live[id]; back {
			return
		}
		n := m.netByName(id.Network)
		m.count("check-gone", n)
		err := m.timed("CHECK", func(ctx context.Context) error {
			return m.c.Nodes[m.r.IntN(len(m.c.Nodes))].Client.Check(ctx,
				&ipamapi.Request{Network: id.Network, ContainerID: id.ContainerID, IfName: id.IfName, Config: n.config(nil)})
		})
		if err == nil {
			m.problem("CHECK of deleted %s succeeded", id)
		} else if code(err) != int(types.ErrUnknownContainer) && !m.tolerated(err) {
			m.problem("CHECK of deleted %s: %v, want code %d", id, err, types.ErrUnknownContainer)
		}
	case w < 810:
		m.lastOp = "status"
		n := m.nets[m.r.IntN(len(m.nets))]
		m.count("status", n)
		node := m.r.IntN(len(m.c.Nodes))
		err := m.timed("STATUS", func(ctx context.Context) error {
			return m.c.Nodes[node].Client.Status(ctx, &ipamapi.Request{Network: n.name, Config: n.config(nil)})
		})
		if err != nil && !m.tolerated(err) {
			m.problem("STATUS %s on %s: %v", n.name, m.c.Nodes[node].Name, err)
		}
	case w < 840 && a != nil:
		m.lastOp = "forget " + a.id.String()
		m.count("forget", a.net)
		a.orphan = true
	case w < 880:
		m.lastOp = "gc"
		n := m.nets[m.r.IntN(len(m.nets))]
		m.count("gc", n)
		m.gc(m.r.IntN(len(m.c.Nodes)), n)
	case w < 920 && !crowded:
		kill := m.r.IntN(8) == 0
		m.lastOp = fmt.Sprintf("burst kill=%v", kill)
		m.stats["burst"]++
		m.burst(kill)
	case w < 925:
		node := m.c.Nodes[m.r.IntN(len(m.c.Nodes))]
		m.lastOp = "restart " + node.Name
		m.stats["ipamd-restart"]++
		if err := node.Restart(); err != nil {
			m.problem("restart %s: %v", node.Name, err)
			if !node.Running() {
				m.t.Fatalf("step %d: %s down", m.step, node.Name)
			}
		}
		m.checkPD(m.nodeIndex(node.Name))
	case w < 945:
		if a == nil || crowded {
			return
		}
		isDel := m.r.IntN(2) == 0
		if !isDel {
			a = m.newAttachment()
		}
		m.lastOp = fmt.Sprintf("kill -9 during %s del=%v", a.id, isDel)
		m.killDuring(a, isDel)
	case w < 955 && m.down < 0:
		m.down = m.r.IntN(len(m.c.Members))
		mem := m.c.Members[m.down]
		m.lastOp = "etcd stop " + mem.Name
		m.stats["etcd-stop"]++
		if m.r.IntN(2) == 0 {
			mem.Kill()
		} else {
			mem.Stop()
		}
		m.lastFault = time.Now()
	case w >= 985 && w < 989 && m.down >= 0 && !crowded:
		m.lastOp = "quorum loss"
		m.quorumLoss()
	case w >= 955 && w < 985 && m.down >= 0:
		m.lastOp = "etcd start"
		m.etcdStart()
	default:
		m.stats["noop"]++
	}
}

// quorumLoss stops a second etcd member, so the cluster has no quorum,
// and sends an ADD: it must be answered within the deadline (code 11 is
// the right answer; it is maybe allocated), and settle once the member is
// back.
func (m *tester) quorumLoss() {
	second := (m.down + 1 + m.r.IntN(len(m.c.Members)-1)) % len(m.c.Members)
	mem := m.c.Members[second]
	mem.Kill()
	m.stats["quorum-loss"]++
	m.lastFault = time.Now()
	a := m.newAttachment()
	a.pod = ""
	var err error
	m.timed("ADD without quorum", func(ctx context.Context) error {
		_, err = m.c.Nodes[a.node].Client.Add(ctx, m.req(a, nil, ""))
		return err
	})
	if err != nil && code(err) != int(types.ErrTryAgainLater) && code(err) != 50 {
		m.problem("ADD %s without quorum: %v, want code 11 or 50", a.id, err)
	}
	if err := mem.Start(); err != nil {
		m.t.Fatalf("step %d: start etcd %s: %v", m.step, mem.Name, err)
	}
	m.lastFault = time.Now()
	m.settle("ADD after quorum loss", func() bool { return m.add(a, nil, 0) })
}

func (m *tester) netByName(name string) *network {
	for _, n := range m.nets {
		if n.name == name {
			return n
		}
	}
	return nil
}

// burst sends concurrent ADDs of new attachments and DELs of live ones to
// all nodes, sometimes killing one node's ipamd (kill -9) in the middle: no
// address may be given twice, and every request settles to the answer the
// model expects.
func (m *tester) burst(kill bool) {
	n := 4 + m.r.IntN(8)
	as := make([]*attachment, n)
	isDel := make([]bool, n)
	taken := map[store.AttachmentID]bool{}
	for i := range as {
		if a := m.pick(); a != nil && !taken[a.id] && m.r.IntN(3) == 0 {
			as[i], isDel[i] = a, true
			taken[a.id] = true
			continue
		}
		as[i] = m.newAttachment()
		// No pod names on new attachments: an ADD racing a twin's DEL
		// for the pod's record is not modelled. Concurrent DELs of twins
		// are (below).
		as[i].pod = ""
	}
	for i, a := range as {
		m.count(map[bool]string{false: "burst-add", true: "burst-del"}[isDel[i]], a.net)
	}
	m.burstStuck = map[stickyKey][]*attachment{}
	defer func() { m.burstStuck = nil }()
	type out struct {
		res *current.Result
		err error
		d   time.Duration
	}
	outs := make([]out, n)
	m.requests += n
	var wg sync.WaitGroup
	for i, a := range as {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			st := time.Now()
			var res *current.Result
			var err error
			if isDel[i] {
				err = m.c.Nodes[a.node].Client.Del(ctx, m.req(a, nil, podArgs(a.pod)))
			} else {
				res, err = m.c.Nodes[a.node].Client.Add(ctx, m.req(a, nil, ""))
			}
			outs[i] = out{res, err, time.Since(st)}
		}()
	}
	victim := -1
	if kill {
		victim = m.r.IntN(len(m.c.Nodes))
		time.Sleep(time.Duration(m.r.IntN(30000)) * time.Microsecond)
		m.c.Nodes[victim].Kill()
		m.stats["kill-9"]++
	}
	wg.Wait()
	if victim >= 0 {
		if err := m.c.Nodes[victim].Start(); err != nil {
			m.t.Fatalf("step %d: restart %s after kill -9: %v", m.step, m.c.Nodes[victim].Name, err)
		}
		m.checkPD(victim)
	}
	// DELs first: their addresses may have gone to a concurrent ADD.
	for pass := range 2 {
		for i, a := range as {
			if isDel[i] != (pass == 0) {
				continue
			}
			o := outs[i]
			if o.d > m.slowest {
				m.slowest, m.slowOp = o.d, "burst"
			}
			if o.d >= deadline {
				m.problem("burst %s (del=%v) not answered within %v", a.id, isDel[i], deadline)
			}
			if o.err != nil {
				if m.tolerated(o.err) || a.node == victim {
					// Maybe done: settle it.
					if isDel[i] {
						m.settle("burst DEL", func() bool { return m.del(a) })
					} else {
						m.settle("burst ADD", func() bool { return m.add(a, nil, 0) })
					}
					continue
				}
				m.problem("burst %s (del=%v): %v", a.id, isDel[i], o.err)
				continue
			}
			if isDel[i] {
				m.forgetAttachment(a, true)
				continue
			}
			got := resultAddrs(o.res)
			for _, other := range m.live {
				for _, ad := range got {
					if slices.Contains(other.addrs, ad) {
						m.dups++
						m.problem("burst ADD %s got %s, which %s holds", a.id, ad, other.id)
					}
				}
			}
			a.addrs = got
			m.live[a.id] = a
		}
	}
	snap := m.snapshotQuiet()
	for i, a := range as {
		if !isDel[i] && m.live[a.id] == a {
			m.validAddrs(snap, a, a.addrs)
		}
	}
	m.settleStickRace(snap)
}

// settleStickRace: when DELs of several attachments of one pod (twins)
// ran concurrently, the one whose Stick committed last owns the pod's
// record, and the others' addresses were released with the record they
// replaced. Which one won is read from the store; it must be one of them.
func (m *tester) settleStickRace(snap *store.Snapshot) {
	for key, cands := range m.burstStuck {
		if len(cands) < 2 {
			continue
		}
		m.stats["sticky-stick-race"]++
		var st *store.Sticky
		for i := range snap.Stickies {
			if s := &snap.Stickies[i]; s.Network == key.network && s.Pod == key.pod && s.IfName == key.ifname {
				st = s
			}
		}
		if st == nil {
			m.problem("concurrent DELs of %d attachments of pod %s/%s on %s left no sticky record", len(cands), key.pod, key.ifname, key.network)
			delete(m.stick, key)
			continue
		}
		got := stickyAddrs(*st)
		var won *attachment
		for _, c := range cands {
			if st.Node == m.c.Nodes[c.node].Name && slices.Equal(got, c.addrs) {
				won = c
			}
		}
		if won == nil {
			m.problem("concurrent DELs of pod %s/%s on %s: the record (node %s, %v) is none of theirs", key.pod, key.ifname, key.network, st.Node, got)
			continue
		}
		m.stick[key] = &stickyRec{node: won.node, addrs: won.addrs}
	}
}
