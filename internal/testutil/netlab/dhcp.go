package netlab

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DHCPKind selects the lab's delegating DHCPv6 server.
type DHCPKind string

// The servers a lab can run on its link.
const (
	// NoDHCP: no DHCPv6 server (the default).
	NoDHCP DHCPKind = ""
	// Kea is ISC Kea 2.2's kea-dhcp6 (Debian kea-dhcp6-server), memfile
	// lease database, control socket with the lease_cmds hook when Debian
	// ships it.
	Kea DHCPKind = "kea"
	// Dhcpd is ISC dhcpd 4.4 in DHCPv6 mode (Debian isc-dhcp-server).
	Dhcpd DHCPKind = "dhcpd"
)

// DHCPOptions shape the delegating server. Zero values take the defaults:
// short lifetimes, so that renewals, take-overs and expiry happen within
// a test.
type DHCPOptions struct {
	// Pool is the space delegated from (default 2001:db8:a00::/48; every
	// lab's netns are private, so all labs may use the same).
	Pool netip.Prefix
	// DelegatedLength is the length of each delegated prefix (default 56).
	DelegatedLength int
	// Preferred and Valid are the delegated prefixes' lifetimes, T1 and T2
	// the IA_PD's timers (defaults 60 s, 120 s, 20 s, 40 s).
	Preferred, Valid, T1, T2 time.Duration
}

func (o *DHCPOptions) setDefaults() {
	if !o.Pool.IsValid() {
		o.Pool = netip.MustParsePrefix("2001:db8:a00::/48")
	}
	if o.DelegatedLength == 0 {
		o.DelegatedLength = 56
	}
	if o.Preferred == 0 {
		o.Preferred = 60 * time.Second
	}
	if o.Valid == 0 {
		o.Valid = 120 * time.Second
	}
	if o.T1 == 0 {
		o.T1 = 20 * time.Second
	}
	if o.T2 == 0 {
		o.T2 = 40 * time.Second
	}
}

// PDMode is the mode key of ipamd's pd section.
type PDMode string

// The PD modes of docs/design/pd-ha-renumbering.md §1.
const (
	// PDNode is one DHCPv6-PD client per node (today's keys only).
	PDNode PDMode = "node"
	// PDCluster is one elected client per segment.
	PDCluster PDMode = "cluster"
)

// PD is a node's pd section. The interface is always the node's uplink,
// lan0.
type PD struct {
	// Mode is PDNode (the default: the section has today's keys only,
	// no mode key) or PDCluster.
	Mode PDMode
	// PrefixLength is the length hint (0: the key is left out).
	PrefixLength int
	// Segment, LeaseTTL (default 3 s), SubnetLength and BlockSize (default
	// 64 each) are the cluster keys.
	Segment                 string
	LeaseTTL                time.Duration
	SubnetLength, BlockSize int
	// NotCandidate writes `candidate: false` (the key is left out
	// otherwise).
	NotCandidate bool
}

// NodePD is a node-mode pd section on lan0 asking for prefixLength.
func NodePD(prefixLength int) *PD { return &PD{Mode: PDNode, PrefixLength: prefixLength} }

// ClusterPD is a cluster-mode pd section on lan0: segment, a
// prefixLength hint, networks of subnetLength, /64 blocks, lease TTL 3 s.
func ClusterPD(segment string, prefixLength, subnetLength int) *PD {
	return &PD{Mode: PDCluster, PrefixLength: prefixLength, Segment: segment, SubnetLength: subnetLength}
}

// yaml is the pd section of ipamd's config file.
func (p *PD) yaml() string {
	var sb strings.Builder
	sb.WriteString("pd:\n")
	if p.Mode == PDCluster {
		sb.WriteString("  mode: cluster\n")
	}
	sb.WriteString("  interface: lan0\n")
	if p.PrefixLength != 0 {
		fmt.Fprintf(&sb, "  prefixLength: %d\n", p.PrefixLength)
	}
	if p.Mode != PDCluster {
		return sb.String()
	}
	ttl, sub, bs := p.LeaseTTL, p.SubnetLength, p.BlockSize
	if ttl == 0 {
		ttl = 3 * time.Second
	}
	if sub == 0 {
		sub = 64
	}
	if bs == 0 {
		bs = 64
	}
	fmt.Fprintf(&sb, "  cluster:\n    segment: %s\n    leaseTTL: %s\n    subnetLength: %d\n    blockSize: %d\n", p.Segment, ttl, sub, bs)
	if p.NotCandidate {
		sb.WriteString("    candidate: false\n")
	}
	return sb.String()
}

// hostDHCP is the server's host number on the link.
const hostDHCP = 3

// DHCPServer is the lab's delegating DHCPv6 server: Kea or dhcpd in its
// own netns on the link, one subnet6 (the link) with a PD pool. The
// netns counts the client messages it receives (nftables counters, by
// DHCPv6 message type) whatever the server does with them, across
// restarts: Messages("solicit") is every Solicit any client sent.
type DHCPServer struct {
	Kind DHCPKind
	// NS is its netns, Addr6 its address on the link.
	NS    string
	Addr6 netip.Addr
	// Dir holds its config, lease file, log and control socket.
	Dir string
	lab *Lab

	mu   sync.Mutex
	opts DHCPOptions
	p    *proc
	// hook is the lease_cmds hook library (Kea), "" when Debian's
	// package has none: Leases then reads the memfile.
	hook string
}

// Paths of the server's files inside Dir.
func (s *DHCPServer) confPath() string { return filepath.Join(s.Dir, string(s.Kind)+".conf") }

// LeasePath is the server's lease file (Kea's memfile CSV, dhcpd's
// dhcpd6.leases).
func (s *DHCPServer) LeasePath() string {
	if s.Kind == Kea {
		return filepath.Join(s.Dir, "leases6.csv")
	}
	return filepath.Join(s.Dir, "dhcpd6.leases")
}

// LogPath is the server's log (stdout and stderr).
func (s *DHCPServer) LogPath() string { return filepath.Join(s.Dir, string(s.Kind)+".log") }

// ControlSocket is Kea's unix control socket.
func (s *DHCPServer) ControlSocket() string { return filepath.Join(s.Dir, "kea.sock") }

// Options are the options the server currently runs with.
func (s *DHCPServer) Options() DHCPOptions {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts
}

func (l *Lab) startDHCP() *DHCPServer {
	l.t.Helper()
	s := &DHCPServer{Kind: l.Opts.DHCP, lab: l, Addr6: l.linkAddr6(hostDHCP), Dir: filepath.Join(l.Dir, "dhcp"), opts: l.Opts.DHCPServer}
	s.opts.setDefaults()
	switch s.Kind {
	case Kea:
		requireBinary(l.t, "kea-dhcp6")
		if m, _ := filepath.Glob("/usr/lib/*/kea/hooks/libdhcp_lease_cmds.so"); len(m) > 0 {
			s.hook = m[0]
		}
	case Dhcpd:
		requireBinary(l.t, "dhcpd")
	default:
		l.t.Fatalf("netlab: unknown DHCP server %q", s.Kind)
	}
	requireBinary(l.t, "nft")
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		l.t.Fatal(err)
	}
	s.NS = l.newNetns("dhcp")
	// No DAD: the server binds lan0's link-local (Kea) at once.
	if err := sysctl(s.NS, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"); err != nil {
		l.t.Fatal(err)
	}
	if err := l.attach(s.NS, "dhcp", s.Addr6); err != nil {
		l.t.Fatal(err)
	}
	if err := s.loadCounters(); err != nil {
		l.t.Fatal(err)
	}
	if s.Kind == Dhcpd {
		if err := os.WriteFile(s.LeasePath(), nil, 0o600); err != nil {
			l.t.Fatal(err)
		}
	}
	if err := s.Start(); err != nil {
		l.t.Fatal(err)
	}
	return s
}

// dhcpMessages are the client messages counted, by DHCPv6 message type
// (RFC 8415 §7.3).
var dhcpMessages = []struct {
	name string
	typ  int
}{{"solicit", 1}, {"request", 3}, {"confirm", 4}, {"renew", 5}, {"rebind", 6}, {"release", 8}, {"decline", 9}}

// loadCounters installs the message counters in the server's netns: UDP to
// port 547, the first payload byte is the message type.
func (s *DHCPServer) loadCounters() error {
	var sb strings.Builder
	sb.WriteString("table inet netlab {\n")
	for _, m := range dhcpMessages {
		fmt.Fprintf(&sb, "  counter %s { }\n", m.name)
	}
	sb.WriteString("  chain in {\n    type filter hook input priority 0; policy accept;\n")
	for _, m := range dhcpMessages {
		fmt.Fprintf(&sb, "    udp dport 547 @th,64,8 %d counter name %q\n", m.typ, m.name)
	}
	sb.WriteString("  }\n}\n")
	path := filepath.Join(s.Dir, "counters.nft")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		return err
	}
	if out, err := exec.Command("ip", "netns", "exec", s.NS, "nft", "-f", path).CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f %s in %s: %v: %s", path, s.NS, err, out)
	}
	return nil
}

// Messages is how many client messages of each type ("solicit",
// "request", "renew", "rebind", "release", "confirm", "decline") reached
// the server's netns since the lab started, retransmissions included.
func (s *DHCPServer) Messages() (map[string]uint64, error) {
	out, err := exec.Command("ip", "netns", "exec", s.NS, "nft", "-j", "list", "counters", "table", "inet", "netlab").Output()
	if err != nil {
		return nil, fmt.Errorf("nft list counters in %s: %w", s.NS, err)
	}
	return parseNftCounters(out)
}

// Solicits is Messages()["solicit"].
func (s *DHCPServer) Solicits() (uint64, error) {
	m, err := s.Messages()
	return m["solicit"], err
}

// parseNftCounters reads `nft -j list counters`: name → packets.
func parseNftCounters(js []byte) (map[string]uint64, error) {
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Name    string `json:"name"`
				Packets uint64 `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("nft counters: %w", err)
	}
	m := map[string]uint64{}
	for _, o := range doc.Nftables {
		if o.Counter != nil {
			m[o.Counter.Name] = o.Counter.Packets
		}
	}
	return m, nil
}

// config is the server's config file for opts.
func (s *DHCPServer) config(o DHCPOptions) string {
	secs := func(d time.Duration) int { return int(d / time.Second) }
	l := s.lab
	if s.Kind == Kea {
		hooks := "[]"
		if s.hook != "" {
			hooks = fmt.Sprintf(`[{"library": %q}]`, s.hook)
		}
		return fmt.Sprintf(`{"Dhcp6": {
  "interfaces-config": {"interfaces": ["lan0"]},
  "server-id": {"type": "EN", "enterprise-id": 2495, "identifier": "6e65746c6162", "persist": false},
  "control-socket": {"socket-type": "unix", "socket-name": %q},
  "hooks-libraries": %s,
  "data-directory": %q,
  "lease-database": {"type": "memfile", "persist": true, "name": %q, "lfc-interval": 0},
  "renew-timer": %d, "rebind-timer": %d, "preferred-lifetime": %d, "valid-lifetime": %d,
  "subnet6": [{"id": 1, "subnet": %q, "interface": "lan0",
    "pd-pools": [{"prefix": %q, "prefix-len": %d, "delegated-len": %d}]}],
  "loggers": [{"name": "kea-dhcp6", "output_options": [{"output": "stdout"}], "severity": "INFO"}]
}}
`, s.ControlSocket(), hooks, s.Dir, s.LeasePath(), secs(o.T1), secs(o.T2), secs(o.Preferred), secs(o.Valid),
			l.LinkPrefix6.String(), o.Pool.Addr().String(), o.Pool.Bits(), o.DelegatedLength)
	}
	// dhcpd: the range is the first to the last delegated prefix of the
	// pool; the server DUID is fixed so that a restart with a new lease
	// file still answers Renews addressed to it.
	last := lastSubprefix(o.Pool, o.DelegatedLength)
	return fmt.Sprintf(`default-lease-time %d;
max-lease-time %d;
preferred-lifetime %d;
option dhcp-renewal-time %d;
option dhcp-rebinding-time %d;
prefix-length-mode prefer;
server-duid EN 2495 "netlab";
subnet6 %s {
  prefix6 %s %s /%d;
}
`, secs(o.Valid), secs(o.Valid), secs(o.Preferred), secs(o.T1), secs(o.T2), l.LinkPrefix6, o.Pool.Addr(), last, o.DelegatedLength)
}

// lastSubprefix is the address of the last /bits prefix inside p.
func lastSubprefix(p netip.Prefix, bits int) netip.Addr {
	a := p.Masked().Addr().As16()
	for i := p.Bits(); i < bits && i < 128; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom16(a)
}

// Start starts the server (with the options it last ran with) and waits
// until it listens on port 547.
func (s *DHCPServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked()
}

func (s *DHCPServer) startLocked() error {
	if s.p != nil && !s.p.exited() {
		return fmt.Errorf("%s already running", s.Kind)
	}
	if err := os.WriteFile(s.confPath(), []byte(s.config(s.opts)), 0o600); err != nil {
		return err
	}
	var args []string
	var env []string
	switch s.Kind {
	case Kea:
		// A stale socket file from a killed server makes Kea refuse to
		// start.
		os.Remove(s.ControlSocket())
		args = []string{"kea-dhcp6", "-c", s.confPath()}
		env = []string{"KEA_PIDFILE_DIR=" + s.Dir, "KEA_LOCKFILE_DIR=" + s.Dir}
	case Dhcpd:
		args = []string{"dhcpd", "-6", "-f", "-d", "-cf", s.confPath(), "-lf", s.LeasePath(),
			"-pf", filepath.Join(s.Dir, "dhcpd6.pid"), "lan0"}
	}
	p, err := startInEnv(s.NS, s.LogPath(), s.Dir, env, args...)
	if err != nil {
		return err
	}
	s.p = p
	if !Poll(15*time.Second, 50*time.Millisecond, func() bool {
		if p.exited() {
			return true
		}
		out, _ := exec.Command("ip", "netns", "exec", s.NS, "ss", "-Hlun", "sport", "=", ":547").Output()
		return len(strings.TrimSpace(string(out))) > 0
	}) || p.exited() {
		return fmt.Errorf("%s in %s not listening on 547 after 15s (exited: %t):\n%s", s.Kind, s.NS, p.exited(), tailFile(s.LogPath(), 3000))
	}
	if s.Kind == Kea {
		// The control socket comes up with the server; wait for it so
		// that Leases and Command work right after Start.
		if !Poll(10*time.Second, 50*time.Millisecond, func() bool {
			_, err := os.Stat(s.ControlSocket())
			return err == nil
		}) {
			return fmt.Errorf("kea: control socket %s not created", s.ControlSocket())
		}
	}
	return nil
}

// Stop stops the server (SIGTERM, by pid); its lease file stays.
func (s *DHCPServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.p.stop(syscall.SIGTERM)
	s.p = nil
}

// Running reports whether the server process is running.
func (s *DHCPServer) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p != nil && !s.p.exited()
}

// Restart stops the server and starts it again with o (zero fields keep
// the current options), the lease file kept: a changed Pool renumbers.
// Kea keeps leases outside its new pool in its database, but answers
// their Renew with a prefix of the new pool and drops the old one at
// that Reply (TestKeaReconfigure); dhcpd drops them at start ("No pool
// found for prefix"), so a Renew of an old prefix gets NoBinding.
func (s *DHCPServer) Restart(o DHCPOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.p.stop(syscall.SIGTERM)
	s.p = nil
	s.opts = mergeOptions(s.opts, o)
	return s.startLocked()
}

// Reconfigure changes the running server's options as Restart does, but
// Kea keeps running: it gets the new config file by config-reload on its
// control socket (leases and counters kept, no gap in service). dhcpd has
// no reload: it is restarted.
func (s *DHCPServer) Reconfigure(ctx context.Context, o DHCPOptions) error {
	if s.Kind != Kea {
		return s.Restart(o)
	}
	s.mu.Lock()
	s.opts = mergeOptions(s.opts, o)
	conf := s.config(s.opts)
	s.mu.Unlock()
	if err := os.WriteFile(s.confPath(), []byte(conf), 0o600); err != nil {
		return err
	}
	_, err := s.Command(ctx, "config-reload", nil)
	return err
}

// mergeOptions is cur with the non-zero fields of o.
func mergeOptions(cur, o DHCPOptions) DHCPOptions {
	if o.Pool.IsValid() {
		cur.Pool = o.Pool
	}
	if o.DelegatedLength != 0 {
		cur.DelegatedLength = o.DelegatedLength
	}
	for _, f := range []struct{ dst, src *time.Duration }{{&cur.Preferred, &o.Preferred}, {&cur.Valid, &o.Valid}, {&cur.T1, &o.T1}, {&cur.T2, &o.T2}} {
		if *f.src != 0 {
			*f.dst = *f.src
		}
	}
	return cur
}

// LogTail is the end of the server's log.
func (s *DHCPServer) LogTail(n int64) string { return tailFile(s.LogPath(), n) }

// Lease6 is one delegated prefix the server holds for a client.
type Lease6 struct {
	Prefix netip.Prefix
	// DUID is the client's DUID in colon hex, IAID its IA_PD's IAID.
	DUID string
	IAID uint32
	// Expires is the end of the valid lifetime (zero: unknown).
	Expires time.Time
}

// Owner is "DUID/IAID".
func (l Lease6) Owner() string { return l.DUID + "/" + strconv.FormatUint(uint64(l.IAID), 10) }

// Leases are the server's live PD leases (active, not expired). Kea: by
// lease6-get-all on its control socket when the lease_cmds hook is
// installed and the server runs, else its memfile; dhcpd: its lease file.
func (s *DHCPServer) Leases(ctx context.Context) ([]Lease6, error) {
	if s.Kind == Kea && s.hook != "" && s.Running() {
		return s.keaLeases(ctx)
	}
	f, err := os.Open(s.LeasePath())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ls []Lease6
	if s.Kind == Kea {
		ls, err = parseKeaCSV(f)
	} else {
		ls, err = parseDhcpdLeases(f)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.LeasePath(), err)
	}
	now := time.Now()
	out := ls[:0]
	for _, l := range ls {
		if l.Expires.IsZero() || l.Expires.After(now) {
			out = append(out, l)
		}
	}
	return out, nil
}

// Command sends one command to Kea's control socket and returns its
// arguments; a result other than 0 (success) or 3 (empty) is an error.
func (s *DHCPServer) Command(ctx context.Context, command string, args any) (json.RawMessage, error) {
	if s.Kind != Kea {
		return nil, fmt.Errorf("netlab: %s has no control socket", s.Kind)
	}
	req := map[string]any{"command": command}
	if args != nil {
		req["arguments"] = args
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", s.ControlSocket())
	if err != nil {
		return nil, fmt.Errorf("kea %s: %w", command, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	if _, err := c.Write(body); err != nil {
		return nil, fmt.Errorf("kea %s: %w", command, err)
	}
	var resp struct {
		Result    int             `json:"result"`
		Text      string          `json:"text"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("kea %s: response: %w", command, err)
	}
	if resp.Result != 0 && resp.Result != 3 {
		return nil, fmt.Errorf("kea %s: result %d: %s", command, resp.Result, resp.Text)
	}
	return resp.Arguments, nil
}

func (s *DHCPServer) keaLeases(ctx context.Context) ([]Lease6, error) {
	raw, err := s.Command(ctx, "lease6-get-all", nil)
	if err != nil {
		return nil, err
	}
	return parseKeaLeases(raw, time.Now())
}

// parseKeaLeases reads lease6-get-all's arguments: the live IA_PD leases
// (state 0 "default", valid lifetime not over at now).
func parseKeaLeases(raw json.RawMessage, now time.Time) ([]Lease6, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var args struct {
		Leases []struct {
			Type      string `json:"type"`
			Address   string `json:"ip-address"`
			PrefixLen int    `json:"prefix-len"`
			DUID      string `json:"duid"`
			IAID      uint32 `json:"iaid"`
			CLTT      int64  `json:"cltt"`
			ValidLft  int64  `json:"valid-lft"`
			State     int    `json:"state"`
		} `json:"leases"`
	}
	if err := json.Unmarshal(raw, &args); err != nil {
		return nil, fmt.Errorf("lease6-get-all: %w", err)
	}
	var out []Lease6
	for _, l := range args.Leases {
		if l.Type != "IA_PD" || l.State != 0 {
			continue
		}
		a, err := netip.ParseAddr(l.Address)
		if err != nil {
			return nil, fmt.Errorf("lease6-get-all: %w", err)
		}
		p, err := a.Prefix(l.PrefixLen)
		if err != nil {
			return nil, fmt.Errorf("lease6-get-all: %s/%d: %w", l.Address, l.PrefixLen, err)
		}
		exp := time.Unix(l.CLTT+l.ValidLft, 0)
		if !exp.After(now) {
			continue
		}
		out = append(out, Lease6{Prefix: p, DUID: strings.ToLower(l.DUID), IAID: l.IAID, Expires: exp})
	}
	return out, nil
}

// parseKeaCSV reads Kea's memfile (append-only: the last line of a prefix
// wins) and returns its IA_PD leases in state 0 with a valid lifetime.
func parseKeaCSV(r io.Reader) ([]Lease6, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	rows, err := cr.ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, nil
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	for _, h := range []string{"address", "duid", "valid_lifetime", "expire", "iaid", "lease_type", "prefix_len", "state"} {
		if _, ok := col[h]; !ok {
			return nil, fmt.Errorf("memfile header lacks %q", h)
		}
	}
	get := func(r []string, h string) string {
		if i := col[h]; i < len(r) {
			return r[i]
		}
		return ""
	}
	last := map[netip.Prefix]Lease6{}
	var order []netip.Prefix
	for _, r := range rows[1:] {
		if get(r, "lease_type") != "2" {
			continue
		}
		p, err := netip.ParsePrefix(get(r, "address") + "/" + get(r, "prefix_len"))
		if err != nil {
			return nil, err
		}
		if _, seen := last[p]; !seen {
			order = append(order, p)
		}
		if get(r, "state") != "0" || get(r, "valid_lifetime") == "0" {
			last[p] = Lease6{} // released, expired or reclaimed
			continue
		}
		iaid, err := strconv.ParseUint(get(r, "iaid"), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("iaid %q: %w", get(r, "iaid"), err)
		}
		exp, err := strconv.ParseInt(get(r, "expire"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("expire %q: %w", get(r, "expire"), err)
		}
		last[p] = Lease6{Prefix: p, DUID: strings.ToLower(get(r, "duid")), IAID: uint32(iaid), Expires: time.Unix(exp, 0)}
	}
	var out []Lease6
	for _, p := range order {
		if l := last[p]; l.Prefix.IsValid() {
			out = append(out, l)
		}
	}
	return out, nil
}

var (
	dhcpdIAPD   = regexp.MustCompile(`^ia-pd "((?:[^"\\]|\\.)*)" \{`)
	dhcpdPrefix = regexp.MustCompile(`^\s*iaprefix (\S+) \{`)
	dhcpdState  = regexp.MustCompile(`^\s*binding state (\w+);`)
	dhcpdEnds   = regexp.MustCompile(`^\s*ends \d+ (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d);`)
)

// parseDhcpdLeases reads dhcpd's lease file (append-only: the last record
// of a prefix wins) and returns the active PD leases. An ia-pd key is the
// IAID in host (little-endian) byte order followed by the DUID, with
// non-printable bytes written as \ooo.
func parseDhcpdLeases(r io.Reader) ([]Lease6, error) {
	last := map[netip.Prefix]Lease6{}
	state := map[netip.Prefix]string{}
	var order []netip.Prefix
	var owner Lease6
	var cur netip.Prefix
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if m := dhcpdIAPD.FindStringSubmatch(line); m != nil {
			key, err := unescapeDhcpd(m[1])
			if err != nil {
				return nil, fmt.Errorf("ia-pd key %q: %w", m[1], err)
			}
			if len(key) < 5 {
				return nil, fmt.Errorf("ia-pd key %q: too short", m[1])
			}
			owner = Lease6{DUID: colonHex(key[4:]), IAID: binary.LittleEndian.Uint32(key[:4])}
			cur = netip.Prefix{}
			continue
		}
		if m := dhcpdPrefix.FindStringSubmatch(line); m != nil {
			p, err := netip.ParsePrefix(m[1])
			if err != nil {
				return nil, err
			}
			if _, seen := last[p]; !seen {
				order = append(order, p)
			}
			cur = p
			l := owner
			l.Prefix = p
			last[p] = l
			state[p] = ""
			continue
		}
		if !cur.IsValid() {
			continue
		}
		if m := dhcpdState.FindStringSubmatch(line); m != nil {
			state[cur] = m[1]
			continue
		}
		if m := dhcpdEnds.FindStringSubmatch(line); m != nil {
			if t, err := time.Parse("2006/01/02 15:04:05", m[1]); err == nil {
				l := last[cur]
				l.Expires = t // dhcpd writes UTC
				last[cur] = l
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var out []Lease6
	for _, p := range order {
		if state[p] == "active" {
			out = append(out, last[p])
		}
	}
	return out, nil
}

func colonHex(b []byte) string {
	h := hex.EncodeToString(b)
	var sb strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteString(h[i : i+2])
	}
	return sb.String()
}

func unescapeDhcpd(s string) ([]byte, error) {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b = append(b, s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '7' {
			if i+3 >= len(s) {
				return nil, errors.New("short octal escape")
			}
			v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
			if err != nil {
				return nil, err
			}
			b = append(b, byte(v))
			i += 3
			continue
		}
		if i+1 < len(s) {
			b = append(b, s[i+1])
			i++
		}
	}
	return b, nil
}
