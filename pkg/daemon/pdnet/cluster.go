package pdnet

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/dhcp6pd"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/link"
)

// Roles of a cluster-mode ipamd in its segment (ipamd pd's "this node").
const (
	RoleLeader   = "leader"    // runs the segment's client
	RoleStandby  = "standby"   // ready, campaigning
	RoleNotReady = "not ready" // a candidate that cannot run the client now
	RoleConsumer = "consumer"  // cluster.candidate false: takes blocks only
)

// Timing of the candidate side.
const (
	// probeEvery is how often readiness is probed (§2.2 of the design).
	probeEvery = 2 * time.Second
	// fenceMargin is taken off the lease TTL for the self-fence deadline:
	// the leader stops its client before etcd can expire its lease, so
	// that two leaders never run past the old lease's end.
	fenceMargin = 500 * time.Millisecond
	// retryMin and retryMax bound the pause after a failed campaign.
	retryMin = 500 * time.Millisecond
	retryMax = 10 * time.Second
)

// Cluster is the cluster-mode delegation of one uplink segment on this
// node. Every node follows the segment's binding in etcd and is the
// allocator's PDSource from it, feeding the same change path as node
// mode (a Delegation without a client); a candidate also campaigns for
// the segment and, while it leads, runs the segment's one DHCPv6-PD client
// with a persister fenced by its leadership.
type Cluster struct {
	cfg   Config
	seg   string
	node  string
	cli   *clientv3.Client
	st    *store.Store
	alloc *allocator.Allocator
	log   *slog.Logger
	id    Identity
	d     *Delegation

	// netns, when set, is the network namespace the readiness probe and
	// the client run in (tests put three candidates in one process).
	netns      string
	probeEvery time.Duration

	mu          sync.Mutex
	binding     dhcp6pd.Binding // as last watched
	leader      string          // the election's first key's value
	leaderSince time.Time       // when this node saw leader take office
	role        string
	why         string          // why not ready
	client      *dhcp6pd.Client // while leading
	lastErr     error           // why the last term ended, when it failed
	past        dhcp6pd.Stats   // counters of the clients of past terms
	wonAt       time.Time       // when this node's current term began
	replied     bool            // the current term saved a Reply
	takeovers   map[string]uint64
	takeoverSec float64 // last take-over; -1: none yet
	fenced      uint64
	expiry      *time.Timer

	// done is closed when the candidate side has stopped (resigned).
	done chan struct{}
	// lastWhy is why the last term ended.
	lastWhy string
	// kaFrozen makes keep-alive responses go unnoticed (tests: a leader
	// cut off from etcd, for the self-fence).
	kaFrozen atomic.Bool
}

// storedBinding is the segment's binding key: the client's binding and
// who wrote it.
type storedBinding struct {
	dhcp6pd.Binding
	Leader    string `json:"leader,omitempty"`
	LeaderRev int64  `json:"leaderRev,omitempty"`
}

// StartCluster starts cluster-mode delegation (cfg.Mode cluster) for node:
// it makes sure the segment has an identity (created if absent, refused if
// it disagrees with cfg), follows the segment's binding as the allocator's
// PDSource and, for a candidate, campaigns for the segment until ctx ends.
func StartCluster(ctx context.Context, cfg Config, cli *clientv3.Client, st *store.Store, node string, alloc *allocator.Allocator, log *slog.Logger) (*Cluster, error) {
	c := newCluster(cfg, cli, st, node, alloc, log)
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Identity is a segment's identity (store.PDIdentity, its DUID decoded).
type Identity struct {
	DUID                    dhcp6pd.DUID
	IAID                    uint32
	SubnetLength, BlockSize int
}

func newCluster(cfg Config, cli *clientv3.Client, st *store.Store, node string, alloc *allocator.Allocator, log *slog.Logger) *Cluster {
	seg := cfg.Cluster.Segment
	log = log.With("component", "pd", "segment", seg)
	c := &Cluster{
		cfg: cfg, seg: seg, node: node, cli: cli, st: st, alloc: alloc, log: log,
		probeEvery: probeEvery, takeovers: map[string]uint64{}, takeoverSec: -1, role: RoleConsumer,
		done: make(chan struct{}),
	}
	if cfg.Cluster.Candidate {
		c.role = RoleNotReady
		c.why = "starting"
	}
	return c
}

func (c *Cluster) start(ctx context.Context) error {
	if err := c.cfg.Validate(); err != nil {
		return err
	}
	id, err := c.ensureIdentity(ctx)
	if err != nil {
		return err
	}
	c.id = id
	c.d = &Delegation{iface: c.cfg.Interface, alloc: c.alloc, log: c.log, valid: map[netip.Prefix]bool{}, stop: ctx.Done()}
	raw, rev, err := c.st.LoadClusterPD(ctx, c.seg)
	if err != nil {
		return fmt.Errorf("pd: %w", err)
	}
	c.alloc.SetPD(c)
	c.apply(raw)
	go c.follow(ctx, rev)
	go c.observe(ctx)
	if c.cfg.Cluster.Candidate {
		go func() {
			defer close(c.done)
			c.campaign(ctx)
		}()
	} else {
		close(c.done)
	}
	c.log.Info("pd: cluster mode", "node", c.node, "candidate", c.cfg.Cluster.Candidate, "interface", c.cfg.Interface,
		"duid", c.id.DUID, "iaid", c.id.IAID, "subnetLength", c.id.SubnetLength, "blockSize", c.id.BlockSize)
	return nil
}

// ensureIdentity reads the segment's identity, creating it from the
// config if absent. A configured key that disagrees with the stored one is
// an error: the identity is never replaced (a new DUID is a new prefix).
func (c *Cluster) ensureIdentity(ctx context.Context) (Identity, error) {
	cc := c.cfg.Cluster
	want := store.PDIdentity{DUID: cc.DUID.String(), IAID: cc.IAID, SubnetLength: cc.SubnetLength, BlockSize: cc.BlockSize, Created: time.Now().UTC()}
	if len(cc.DUID) == 0 {
		want.DUID = randomDUID().String()
	}
	got, err := c.st.CreatePDIdentity(ctx, c.seg, want)
	if err != nil {
		return Identity{}, fmt.Errorf("pd: %w", err)
	}
	duid, err := dhcp6pd.ParseDUID(got.DUID)
	if err != nil {
		return Identity{}, fmt.Errorf("pd: identity of segment %s in etcd (%s): %w", c.seg, store.PDIdentityKey(c.seg), err)
	}
	id := Identity{DUID: duid, IAID: got.IAID, SubnetLength: got.SubnetLength, BlockSize: got.BlockSize}
	if got.Created.Equal(want.Created) && got.DUID == want.DUID {
		c.log.Info("pd: segment identity created", "duid", id.DUID, "iaid", id.IAID)
	}
	return id, checkIdentity(cc, id, c.seg)
}

// checkIdentity compares the keys the config file gave with the stored
// identity.
func checkIdentity(cc ClusterConfig, id Identity, seg string) error {
	for _, k := range []struct {
		key              string
		stored, configed any
		same             bool
	}{
		{"duid", id.DUID, cc.DUID, id.DUID.Equal(cc.DUID)},
		{"iaid", id.IAID, cc.IAID, id.IAID == cc.IAID},
		{"subnetLength", id.SubnetLength, cc.SubnetLength, id.SubnetLength == cc.SubnetLength},
		{"blockSize", id.BlockSize, cc.BlockSize, id.BlockSize == cc.BlockSize},
	} {
		if cc.Set(k.key) && !k.same {
			return fmt.Errorf("pd.cluster.%s: segment %s has %v stored in etcd (%s), configured %v: the segment's identity is never replaced (a new DUID or IAID is a new prefix); configure the stored value or leave the key out",
				k.key, seg, k.stored, store.PDIdentityKey(seg), k.configed)
		}
	}
	return nil
}

// randomDUID is a DUID-UUID (type 4, RFC 6355) of a random (version 4)
// UUID: the segment's identity belongs to no node (a node's MAC would
// leave with the node).
func randomDUID() dhcp6pd.DUID {
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return dhcp6pd.DUIDUUID(u)
}

// apply takes a new value of the binding key (nil: deleted) and feeds the
// change path every node shares, leader included.
func (c *Cluster) apply(raw []byte) {
	var sb storedBinding
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &sb); err != nil {
			c.log.Error("pd: undecodable binding in etcd (ignored)", "key", store.ClusterPDKey(c.seg), "error", err)
			return
		}
	}
	c.mu.Lock()
	c.binding = sb.Binding.Clone()
	c.mu.Unlock()
	c.d.changed(sb.Binding)
	c.scheduleExpiry()
}

// scheduleExpiry makes the change path run when the next prefix's valid
// lifetime ends: a follower has no client whose timers would.
func (c *Cluster) scheduleExpiry() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expiry != nil {
		c.expiry.Stop()
		c.expiry = nil
	}
	now := time.Now()
	var next time.Time
	for _, p := range c.binding.Prefixes {
		if v := p.ValidUntil(); v.After(now) && v.Year() < 9999 && (next.IsZero() || v.Before(next)) {
			next = v
		}
	}
	if next.IsZero() {
		return
	}
	c.expiry = time.AfterFunc(next.Sub(now)+10*time.Millisecond, func() {
		select {
		case <-c.d.stop:
			return
		default:
		}
		c.mu.Lock()
		b := c.binding.Clone()
		c.mu.Unlock()
		c.d.changed(b)
		c.scheduleExpiry()
	})
}

// follow watches the binding key until ctx ends, reloading it after a
// broken watch (etcd refused or closed it).
func (c *Cluster) follow(ctx context.Context, rev int64) {
	for ctx.Err() == nil {
		for ev := range c.st.WatchClusterPD(ctx, c.seg, rev) {
			if ev.Err != nil {
				c.log.Warn("pd: binding watch broken (reloading)", "error", ev.Err)
				break
			}
			c.apply(ev.Raw)
			rev = ev.Rev
		}
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(retryMin):
			}
			lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
			raw, r, err := c.st.LoadClusterPD(lctx, c.seg)
			lcancel()
			if err != nil {
				c.log.Warn("pd: reload binding", "error", err)
				continue
			}
			c.apply(raw)
			rev = r
			break
		}
	}
}

// observe keeps c.leader: the value of the election's oldest key.
func (c *Cluster) observe(ctx context.Context) {
	pfx := store.ElectionPrefixPD(c.seg) + "/"
	for ctx.Err() == nil {
		resp, err := c.cli.Get(ctx, pfx, clientv3.WithFirstCreate()...)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		name := ""
		if len(resp.Kvs) > 0 {
			name = string(resp.Kvs[0].Value)
		}
		c.mu.Lock()
		if name != c.leader {
			c.leader, c.leaderSince = name, time.Now()
		}
		c.mu.Unlock()
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		select {
		case <-c.cli.Watch(wctx, pfx, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)):
		case <-ctx.Done():
		}
		cancel()
	}
}

// campaign runs the candidate side until ctx ends: wait to be ready, then
// campaign and lead; again after every term.
func (c *Cluster) campaign(ctx context.Context) {
	wait := retryMin
	for ctx.Err() == nil {
		if !c.waitReady(ctx) {
			return
		}
		err := c.lead(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			wait = retryMin
			continue
		}
		c.log.Warn("pd: election", "node", c.node, "error", err, "retryIn", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

// waitReady probes until this node could run the client (false: ctx
// ended).
func (c *Cluster) waitReady(ctx context.Context) bool {
	for {
		err := c.probe(false)
		c.mu.Lock()
		if err != nil {
			if c.role != RoleNotReady || c.why != err.Error() {
				c.log.Info("pd: not ready to lead", "node", c.node, "why", err)
			}
			c.role, c.why = RoleNotReady, err.Error()
		} else {
			c.role, c.why = RoleStandby, ""
		}
		c.mu.Unlock()
		if err == nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(c.probeEvery):
		}
	}
}

// probe checks readiness: the interface up with carrier and a link-local
// address that has passed DAD, and (unless this node leads, when its own
// client holds it) UDP port 546 bindable on it. A ready candidate's client
// starts at once, without dhcp6pd.Run's wait for the link-local address.
func (c *Cluster) probe(leading bool) error {
	return c.do(func() error { return probeIface(c.cfg.Interface, leading) })
}

func probeIface(name string, leading bool) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return fmt.Errorf("interface %s is down", name)
	}
	if ifi.Flags&net.FlagRunning == 0 {
		return fmt.Errorf("interface %s has no carrier", name)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok || !ip.Is6() || ip.Is4In6() || !ip.IsLinkLocalUnicast() {
			continue
		}
		if leading {
			return nil
		}
		conn, err := net.ListenUDP("udp6", &net.UDPAddr{IP: ip.AsSlice(), Port: 546, Zone: name})
		switch {
		case errors.Is(err, syscall.EADDRNOTAVAIL):
			return fmt.Errorf("link-local %s on %s is tentative (DAD)", ip, name)
		case errors.Is(err, syscall.EADDRINUSE):
			return fmt.Errorf("UDP port 546 on %s is taken (another DHCPv6 client)", name)
		case err != nil:
			return fmt.Errorf("bind [%s%%%s]:546: %w", ip, name, err)
		}
		conn.Close()
		return nil
	}
	return fmt.Errorf("no link-local address on %s", name)
}

// do runs f in the cluster's network namespace (tests), or here.
func (c *Cluster) do(f func() error) error {
	if c.netns == "" {
		return f()
	}
	ns, err := link.OpenNetNS(c.netns)
	if err != nil {
		return err
	}
	defer ns.Close()
	return ns.Do(f)
}

// lead campaigns once and, when elected, runs the segment's client until
// the term ends: ctx ends (Resign first: the next candidate need not wait
// for the lease to expire), the session is lost, the persister finds
// itself deposed (dhcp6pd.ErrNotOwner), the self-fence deadline passes,
// the node stops being ready, or the client fails (an error: the caller
// backs off before campaigning again). The client is stopped by its
// context, so it never sends a Release on a step-down.
func (c *Cluster) lead(ctx context.Context) error {
	ttl := c.cfg.Cluster.LeaseTTL
	granted := time.Now()
	lease, err := c.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return fmt.Errorf("election lease: %w", err)
	}
	// The session outlives ctx: at a stop the leader resigns and the
	// session's Close revokes the lease, both of which need a live context
	// (the session's own would be cancelled with ctx).
	sess, err := concurrency.NewSession(c.cli, concurrency.WithLease(lease.ID), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		c.revoke(lease.ID)
		return fmt.Errorf("session: %w", err)
	}
	defer sess.Close() // revokes the lease: our election key goes with it
	ka := &keepAlives{at: granted, frozen: &c.kaFrozen}
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	// A second receiver of the session's keep-alives: the session does
	// not say when the lease was last extended, the self-fence needs it.
	kach, err := c.cli.KeepAlive(kctx, sess.Lease())
	if err != nil {
		return fmt.Errorf("keep-alive: %w", err)
	}
	go ka.follow(kach)

	el := concurrency.NewElection(sess, store.ElectionPrefixPD(c.seg))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	notReady := make(chan error, 1)
	go func() {
		t := time.NewTicker(c.probeEvery)
		defer t.Stop()
		for {
			select {
			case <-sess.Done():
				cancel()
				return
			case <-cctx.Done():
				return
			case <-t.C:
				if err := c.probe(false); err != nil {
					notReady <- err
					cancel()
					return
				}
			}
		}
	}()
	if err := el.Campaign(cctx, c.node); err != nil {
		select {
		case err := <-notReady:
			c.log.Info("pd: no longer ready: campaign withdrawn", "node", c.node, "why", err)
			return nil
		default:
		}
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("campaign: %w", err)
	}
	cancel() // the probe goroutine: the leader probes below
	return c.term(ctx, sess, el, ka)
}

// term is one leadership: the client runs, fenced by the election key's
// create revision.
func (c *Cluster) term(ctx context.Context, sess *concurrency.Session, el *concurrency.Election, ka *keepAlives) error {
	won := time.Now()
	rev := el.Rev()
	leader := clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", rev)
	ttl := c.cfg.Cluster.LeaseTTL
	cl, err := dhcp6pd.New(dhcp6pd.Config{
		Interface: c.cfg.Interface, PrefixLength: c.cfg.PrefixLength, DUID: c.id.DUID, IAID: c.id.IAID,
		Persister: &fencedPersister{c: c, leader: leader, rev: rev, won: won},
		TakeOver:  true,
		Logger:    c.log.With("interface", c.cfg.Interface),
	})
	if err != nil {
		return fmt.Errorf("pd client: %w", err)
	}
	c.mu.Lock()
	c.role, c.why, c.client, c.wonAt, c.replied = RoleLeader, "", cl, won, false
	c.leader, c.leaderSince = c.node, won
	c.mu.Unlock()
	c.log.Info("pd: leading the segment", "node", c.node, "electionRev", rev)

	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	runDone := make(chan error, 1)
	go func() { runDone <- c.do(func() error { return cl.Run(runCtx) }) }()

	var why error
	resign := false
	ready := time.NewTicker(c.probeEvery)
	defer ready.Stop()
	for why == nil {
		left := time.Until(ka.last().Add(ttl - fenceMargin))
		fence := time.NewTimer(left)
		select {
		case <-ctx.Done():
			why, resign = ctx.Err(), true
		case <-sess.Done():
			why = errors.New("election session lost")
		case err := <-runDone:
			runDone <- err
			if err == nil {
				err = errors.New("client stopped")
			}
			// Resign unless deposed: the next candidate need not wait
			// for this lease to expire.
			why, resign = err, !errors.Is(err, dhcp6pd.ErrNotOwner)
		case <-fence.C:
			if time.Since(ka.last()) >= ttl-fenceMargin {
				why = fmt.Errorf("self-fence: no keep-alive of the election lease for %v (lease TTL %v)", time.Since(ka.last()).Round(time.Millisecond), ttl)
			}
		case <-ready.C:
			if err := c.probe(true); err != nil {
				why, resign = fmt.Errorf("not ready: %w", err), true
			}
		}
		fence.Stop()
	}
	if ctx.Err() != nil {
		resign = true // whichever event the stop raced with
	}
	if resign {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := el.Resign(rctx); err != nil {
			c.log.Warn("pd: resign", "error", err)
		}
		rcancel()
	}
	stopRun()
	var runErr error
	select {
	case runErr = <-runDone:
	case <-time.After(10 * time.Second):
		runErr = errors.New("client did not stop within 10 s")
	}
	c.mu.Lock()
	st := cl.Stats()
	for k, v := range st.Sent {
		if c.past.Sent == nil {
			c.past = dhcp6pd.Stats{Sent: map[string]uint64{}, Exchanges: map[dhcp6pd.Exchange]uint64{}}
		}
		c.past.Sent[k] += v
	}
	for k, v := range st.Exchanges {
		if c.past.Exchanges == nil {
			c.past = dhcp6pd.Stats{Sent: map[string]uint64{}, Exchanges: map[dhcp6pd.Exchange]uint64{}}
		}
		c.past.Exchanges[k] += v
	}
	c.client = nil
	c.role = RoleStandby
	c.lastWhy = why.Error()
	if runErr != nil && !errors.Is(runErr, dhcp6pd.ErrNotOwner) {
		c.lastErr = runErr
	}
	c.mu.Unlock()
	lvl := slog.LevelWarn
	if errors.Is(why, context.Canceled) {
		lvl = slog.LevelInfo
	}
	c.log.Log(context.Background(), lvl, "pd: stepped down", "node", c.node, "why", why, "led", time.Since(won).Round(time.Millisecond))
	if runErr != nil && !errors.Is(runErr, dhcp6pd.ErrNotOwner) && ctx.Err() == nil {
		// The client could not run here (socket, interface): campaign
		// again only after the backoff, leaving the segment to the other
		// candidates meanwhile.
		return fmt.Errorf("pd client on %s: %w", c.cfg.Interface, runErr)
	}
	return nil
}

// revoke gives a lease back (bounded: etcd may be gone).
func (c *Cluster) revoke(id clientv3.LeaseID) {
	rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = c.cli.Revoke(rctx, id)
}

// keepAlives records when the election lease was last extended.
type keepAlives struct {
	mu     sync.Mutex
	at     time.Time
	frozen *atomic.Bool
}

func (k *keepAlives) follow(ch <-chan *clientv3.LeaseKeepAliveResponse) {
	for range ch {
		if k.frozen.Load() {
			continue
		}
		k.mu.Lock()
		k.at = time.Now()
		k.mu.Unlock()
	}
}

func (k *keepAlives) last() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.at
}

// fencedPersister is the leader's dhcp6pd.Persister: the segment's binding
// key, written only while the election key this term began with exists.
type fencedPersister struct {
	c      *Cluster
	leader clientv3.Cmp
	rev    int64
	won    time.Time
}

func (p *fencedPersister) Load(ctx context.Context) (dhcp6pd.Binding, error) {
	raw, _, err := p.c.st.LoadClusterPD(ctx, p.c.seg)
	if err != nil || raw == nil {
		return dhcp6pd.Binding{}, err
	}
	var sb storedBinding
	if err := json.Unmarshal(raw, &sb); err != nil {
		return dhcp6pd.Binding{}, fmt.Errorf("decode %s: %w", store.ClusterPDKey(p.c.seg), err)
	}
	return sb.Binding, nil
}

func (p *fencedPersister) Save(ctx context.Context, b dhcp6pd.Binding) error {
	c := p.c
	raw, err := json.Marshal(storedBinding{Binding: b, Leader: c.node, LeaderRev: p.rev})
	if err != nil {
		return err
	}
	err = c.st.SaveClusterPD(ctx, c.seg, raw, p.leader)
	if errors.Is(err, store.ErrNotLeader) {
		c.mu.Lock()
		c.fenced++
		c.mu.Unlock()
		c.log.Warn("pd: binding write refused: no longer the segment's leader", "node", c.node, "electionRev", p.rev)
		return fmt.Errorf("%w: %w", dhcp6pd.ErrNotOwner, err)
	}
	if err != nil {
		return err
	}
	// The first Reply of the term (not the restore of the stored binding
	// at start, which is saved too) completes the take-over.
	if b.ReplyTime.Before(p.won) {
		return nil
	}
	c.mu.Lock()
	first := !c.replied && c.client != nil
	var ex string
	var took time.Duration
	if first {
		c.replied = true
		sent := c.client.Stats().Sent
		switch {
		case sent["solicit"] > 0:
			ex = "solicit"
		case sent["rebind"] > 0:
			ex = "rebind"
		default:
			ex = "renew"
		}
		took = time.Since(p.won)
		c.takeovers[ex]++
		c.takeoverSec = took.Seconds()
	}
	c.mu.Unlock()
	if first {
		c.log.Info("pd: take-over done: binding saved", "node", c.node, "exchange", ex, "took", took.Round(time.Millisecond),
			"prefixes", len(b.Prefixes))
	}
	return nil
}

// Done is closed once, after ctx ended, this node has stopped its client
// and resigned: ipamd waits for it before it closes its etcd client.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// Interface is the uplink (allocator.PDSource): this node's interface, or
// the segment for a consumer.
func (c *Cluster) Interface() string {
	if c.cfg.Interface != "" {
		return c.cfg.Interface + " (segment " + c.seg + ")"
	}
	return "segment " + c.seg
}

// Delegated lists the prefixes of the segment's binding as last watched
// (allocator.PDSource).
func (c *Cluster) Delegated() []allocator.Delegated {
	c.mu.Lock()
	b := c.binding.Clone()
	c.mu.Unlock()
	return delegatedOf(b)
}

// SetRenumberer turns renumbering on for this node's attachments
// (Delegation.SetRenumberer): every node renumbers its own.
func (c *Cluster) SetRenumberer(r Renumberer) { c.d.SetRenumberer(r) }

// Renumberings counts this node's renumberings by kind.
func (c *Cluster) Renumberings() map[string]uint64 { return c.d.Renumberings() }

// PDLayout is the segment's slicing of its prefix (allocator's optional
// PDLayout interface), from the identity.
func (c *Cluster) PDLayout() (subnetLength, blockSize int) {
	return c.id.SubnetLength, c.id.BlockSize
}

// Err says why no prefix is held, when the reason is known here.
func (c *Cluster) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.binding.Prefixes) > 0 {
		return nil
	}
	if c.leader == "" {
		return fmt.Errorf("segment %s has no leader (no candidate ready)", c.seg)
	}
	return c.lastErr
}

func delegatedOf(b dhcp6pd.Binding) []allocator.Delegated {
	out := make([]allocator.Delegated, 0, len(b.Prefixes))
	for _, p := range b.Prefixes {
		out = append(out, allocator.Delegated{Prefix: p.Prefix, Preferred: p.PreferredUntil(), Valid: p.ValidUntil(), Updated: p.Updated})
	}
	return out
}

// State is `ipamd pd`'s view: the segment, its leader, this node's role
// and the binding as followed.
func (c *Cluster) State(context.Context) (ipamapi.PDState, error) {
	c.mu.Lock()
	b := c.binding.Clone()
	st := ipamapi.PDState{Mode: ModeCluster, Segment: c.seg, Leader: c.leader, Role: c.role}
	if c.role == RoleNotReady && c.why != "" {
		st.Role += ": " + c.why
	}
	if c.leader != "" {
		st.LeaderSince = c.leaderSince.UTC()
	}
	c.mu.Unlock()
	fillState(&st, b, c.cfg.Interface, time.Now())
	if len(b.ClientDUID) == 0 {
		st.ClientDUID, st.IAID = c.id.DUID.String(), c.id.IAID
	}
	return st, nil
}

// Release is refused in cluster mode: the binding is the segment's, not
// this node's.
func (c *Cluster) Release(context.Context) (ipamapi.PDState, error) {
	return ipamapi.PDState{}, fmt.Errorf("pd release: cluster mode: the delegation belongs to segment %s, not to this node; stop the segment's ipamds or switch them to mode node", c.seg)
}
