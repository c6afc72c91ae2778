package bgpspeaker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Family is an address family the speaker negotiates and announces.
type Family string

// The families a Speaker can announce.
const (
	IPv6Unicast Family = "ipv6-unicast"
	IPv4Unicast Family = "ipv4-unicast"
)

// Defaults applied by Config.SetDefaults.
const (
	DefaultHoldTime    = 90  // seconds
	DefaultRestartTime = 120 // seconds
)

// Config is the speaker's configuration: ipamd's config file section `bgp`.
type Config struct {
	// ASN is this node's autonomous system number.
	ASN uint32 `json:"asn"`
	// RouterID is the BGP identifier, an IPv4 address unique among the peers.
	RouterID netip.Addr `json:"routerID"`
	// ListenPort is the TCP port to accept sessions on. 0 (the default)
	// means no listener: the speaker dials every peer, and several
	// speakers on one host never compete for port 179.
	ListenPort int `json:"listenPort,omitempty"`
	// Peers are the upstream routers.
	Peers []PeerConfig `json:"peers"`
	// NextHop is the IPv6 next hop of announced IPv6 prefixes. Default:
	// the local address of each session (next-hop-self).
	NextHop netip.Addr `json:"nextHop,omitzero"`
	// NextHopIPv4 is the IPv4 next hop of announced IPv4 prefixes. It is
	// required when IPv4 prefixes are announced over an IPv6 session (an
	// IPv6 next hop for an IPv4 prefix, RFC 8950, is refused by most
	// routers unless configured for it). Default on IPv4 sessions: the
	// session's local address.
	NextHopIPv4 netip.Addr `json:"nextHopIPv4,omitzero"`
	// Families to negotiate. Default: ipv6-unicast, and ipv4-unicast too
	// when NextHopIPv4 is set or a peer has an IPv4 address.
	Families []Family `json:"families,omitempty"`
	// GracefulRestart (RFC 4724) lets peers keep this node's routes while
	// the speaker restarts.
	GracefulRestart GracefulRestartConfig `json:"gracefulRestart"`
	// Communities are added to every announcement ("65001:100",
	// "no-export", "no-advertise", "no-export-subconfed").
	Communities []string `json:"communities,omitempty"`
}

// PeerConfig is one BGP neighbour.
type PeerConfig struct {
	// Address of the neighbour (IPv6 or IPv4).
	Address netip.Addr `json:"address"`
	// ASN of the neighbour.
	ASN uint32 `json:"asn"`
	// Password enables TCP-MD5 (RFC 2385) on the session. Prefer
	// PasswordFile or PasswordEnv: a password written here is readable by
	// whoever reads the config file (ipamd refuses a config file holding
	// one that others can read).
	Password string `json:"password,omitempty"`
	// PasswordFile is a file holding the password (one trailing newline
	// is dropped), readable by its owner only (mode 0600 or 0400:
	// anything more open is refused). ParseConfig reads it into Password.
	PasswordFile string `json:"passwordFile,omitempty"`
	// PasswordEnv names an environment variable holding the password
	// (e.g. from a Kubernetes Secret). ParseConfig reads it into Password.
	PasswordEnv string `json:"passwordEnv,omitempty"`
	// HoldTime in seconds; 0 means DefaultHoldTime. At least 3.
	HoldTime uint32 `json:"holdTime,omitempty"`
	// Multihop is the TTL of an eBGP session to a neighbour that is not
	// directly connected; 0 means directly connected (TTL 1).
	Multihop uint8 `json:"multihop,omitempty"`
	// LocalAddress is the source address of the session. Default: chosen
	// by the kernel. Needed when several speakers on one host peer with
	// the same router.
	LocalAddress netip.Addr `json:"localAddress,omitzero"`
}

// GracefulRestartConfig configures graceful restart.
type GracefulRestartConfig struct {
	// Enabled defaults to true.
	Enabled *bool `json:"enabled,omitempty"`
	// RestartTime in seconds (1–4095) peers keep the routes of a
	// restarting speaker. 0 means DefaultRestartTime.
	RestartTime uint16 `json:"restartTime,omitempty"`
}

// IsEnabled reports whether graceful restart is on (the default).
func (g GracefulRestartConfig) IsEnabled() bool { return g.Enabled == nil || *g.Enabled }

// ParseConfig decodes a JSON config (unknown fields are errors), applies
// the defaults and validates it.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("bgp config: %w", err)
	}
	if dec.More() {
		return Config{}, errors.New("bgp config: trailing data after the JSON object")
	}
	if err := c.loadPasswords(os.LookupEnv); err != nil {
		return Config{}, err
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// maxPasswordFile bounds what is read from a password file: a TCP-MD5 key
// is at most 80 bytes.
const maxPasswordFile = 4096

// loadPasswords reads each peer's passwordFile or passwordEnv into
// Password (and clears the source, so the config stays one that
// ParseConfig accepts again). Errors name the peer, the file or variable,
// never the secret.
func (c *Config) loadPasswords(lookupEnv func(string) (string, bool)) error {
	var errs []error
	for i := range c.Peers {
		p := &c.Peers[i]
		field := fmt.Sprintf("bgp.peers[%d]", i)
		sources := 0
		for _, set := range []bool{p.Password != "", p.PasswordFile != "", p.PasswordEnv != ""} {
			if set {
				sources++
			}
		}
		if sources > 1 {
			errs = append(errs, fmt.Errorf("%s: give one of password, passwordFile, passwordEnv", field))
			continue
		}
		switch {
		case p.PasswordFile != "":
			pw, err := readPasswordFile(p.PasswordFile)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.passwordFile: %w", field, err))
				continue
			}
			p.Password, p.PasswordFile = pw, ""
		case p.PasswordEnv != "":
			pw, ok := lookupEnv(p.PasswordEnv)
			if !ok || pw == "" {
				errs = append(errs, fmt.Errorf("%s.passwordEnv: environment variable %q is not set or empty", field, p.PasswordEnv))
				continue
			}
			p.Password, p.PasswordEnv = pw, ""
		}
	}
	return errors.Join(errs...)
}

// readPasswordFile reads a password from a regular file only its owner can
// read.
func readPasswordFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		return "", fmt.Errorf("%s has mode %04o: other users can read the password; make it 0600 or 0400", path, mode)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPasswordFile+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxPasswordFile {
		return "", fmt.Errorf("%s is larger than %d bytes", path, maxPasswordFile)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if pw == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return pw, nil
}

// SetDefaults fills in every field left empty that has a default.
func (c *Config) SetDefaults() {
	for i := range c.Peers {
		if c.Peers[i].HoldTime == 0 {
			c.Peers[i].HoldTime = DefaultHoldTime
		}
	}
	if c.GracefulRestart.Enabled == nil {
		on := true
		c.GracefulRestart.Enabled = &on
	}
	if c.GracefulRestart.RestartTime == 0 {
		c.GracefulRestart.RestartTime = DefaultRestartTime
	}
	if len(c.Families) == 0 {
		c.Families = []Family{IPv6Unicast}
		v4 := c.NextHopIPv4.IsValid()
		for _, p := range c.Peers {
			v4 = v4 || p.Address.Unmap().Is4()
		}
		if v4 {
			c.Families = append(c.Families, IPv4Unicast)
		}
	}
}

// Validate checks the config (after SetDefaults). Errors name the field
// and the offending value.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("bgp."+format, a...)) }

	if c.ASN == 0 {
		bad("asn: must be set (1–4294967295)")
	}
	if !c.RouterID.IsValid() || !c.RouterID.Is4() || c.RouterID.IsUnspecified() {
		bad("routerID %q: must be a non-zero IPv4 address", addrString(c.RouterID))
	}
	if c.ListenPort < 0 || c.ListenPort > 65535 {
		bad("listenPort %d: must be 0 (no listener) or 1–65535", c.ListenPort)
	}
	if len(c.Peers) == 0 {
		bad("peers: at least one peer is required")
	}
	if c.NextHop.IsValid() && (!c.NextHop.Is6() || c.NextHop.Is4In6() || c.NextHop.IsUnspecified()) {
		bad("nextHop %q: must be an IPv6 unicast address", c.NextHop)
	}
	if c.NextHopIPv4.IsValid() && (!c.NextHopIPv4.Is4() || c.NextHopIPv4.IsUnspecified()) {
		bad("nextHopIPv4 %q: must be an IPv4 unicast address", c.NextHopIPv4)
	}
	for _, f := range c.Families {
		if f != IPv6Unicast && f != IPv4Unicast {
			bad("families %q: unknown family (want %q or %q)", f, IPv6Unicast, IPv4Unicast)
		}
	}
	if gr := c.GracefulRestart; gr.RestartTime > 4095 {
		bad("gracefulRestart.restartTime %d: must be 1–4095 seconds", gr.RestartTime)
	}
	if _, err := parseCommunities(c.Communities); err != nil {
		bad("communities: %v", err)
	}
	seen := map[netip.Addr]bool{}
	for i, p := range c.Peers {
		field := fmt.Sprintf("peers[%d]", i)
		a := p.Address.Unmap()
		switch {
		case !a.IsValid() || a.IsUnspecified() || a.IsMulticast():
			bad("%s.address %q: must be a unicast IP address", field, addrString(p.Address))
		case a.Zone() != "":
			bad("%s.address %q: link-local peers with a zone are not supported", field, p.Address)
		case seen[a]:
			bad("%s.address %q: duplicate peer", field, p.Address)
		}
		seen[a] = true
		if p.ASN == 0 {
			bad("%s.asn: must be set", field)
		}
		if p.HoldTime != 0 && p.HoldTime < 3 || p.HoldTime > 65535 {
			bad("%s.holdTime %d: must be 3–65535 seconds", field, p.HoldTime)
		}
		if len(p.Password) > 80 {
			bad("%s.password: longer than 80 bytes (TCP-MD5 key limit)", field)
		}
		if p.LocalAddress.IsValid() && a.IsValid() && p.LocalAddress.Unmap().Is4() != a.Is4() {
			bad("%s.localAddress %q: not the same family as address %q", field, p.LocalAddress, p.Address)
		}
		if a.Is6() && slices.Contains(c.Families, IPv4Unicast) && !c.NextHopIPv4.IsValid() {
			bad("nextHopIPv4: required to announce ipv4-unicast over the IPv6 session to peers[%d] %q", i, p.Address)
		}
	}
	return errors.Join(errs...)
}

func (c *Config) hasFamily(f Family) bool { return slices.Contains(c.Families, f) }

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

var wellKnownCommunities = map[string]uint32{
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"blackhole":           0xFFFF029A,
	"graceful-shutdown":   0xFFFF0000,
}

// parseCommunity parses a standard community: "ASN:VALUE" (16 bits each)
// or a well-known name.
func parseCommunity(s string) (uint32, error) {
	if v, ok := wellKnownCommunities[strings.ToLower(s)]; ok {
		return v, nil
	}
	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("community %q: want ASN:VALUE (16 bits each) or a well-known name", s)
	}
	h, err1 := strconv.ParseUint(hi, 10, 16)
	l, err2 := strconv.ParseUint(lo, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("community %q: want ASN:VALUE (16 bits each) or a well-known name", s)
	}
	return uint32(h)<<16 | uint32(l), nil
}

// parseCommunities parses and sorts communities, dropping duplicates.
func parseCommunities(list []string) ([]uint32, error) {
	out := make([]uint32, 0, len(list))
	for _, s := range list {
		v, err := parseCommunity(s)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
