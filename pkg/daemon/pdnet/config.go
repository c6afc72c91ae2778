package pdnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/dhcp6pd"
)

// Modes of the pd section.
const (
	// ModeNode runs one DHCPv6-PD client per node (the binding under
	// /v6cni/pd/<node>/<iaid>): the behaviour before cluster mode existed.
	ModeNode = "node"
	// ModeCluster runs one client per uplink segment, on the elected
	// leader of the segment's candidates; every node of the segment takes
	// blocks from the one delegation.
	ModeCluster = "cluster"
)

// Defaults of the cluster section.
const (
	DefaultLeaseTTL     = 3 * time.Second
	DefaultClusterIAID  = 1
	DefaultSubnetLength = 64
	DefaultBlockSize    = 64
	// MaxBlockSize bounds cluster.blockSize: a block smaller than a /120
	// is not worth an etcd key and a route.
	MaxBlockSize = 120
)

// Config is ipamd's `pd` section (pdnet.ParseConfig).
type Config struct {
	// Mode is ModeNode (default) or ModeCluster.
	Mode string
	// Interface is this node's interface on the uplink segment. Node mode:
	// empty means no PD client (the flag --pd-interface may set it).
	// Cluster mode: required for a candidate.
	Interface string
	// PrefixLength is the length hint sent while nothing is held (0:
	// dhcp6pd.DefaultPrefixLength).
	PrefixLength int
	// DUID and IAID are the node-mode identity (empty/0: dhcp6pd's
	// defaults, persisted binding first).
	DUID dhcp6pd.DUID
	IAID uint32
	// Cluster is the cluster section, used in cluster mode only.
	Cluster ClusterConfig
}

// ClusterConfig is the `pd.cluster` section.
type ClusterConfig struct {
	// Segment names the uplink L2 segment: nodes with the same name share
	// one delegation, one election and one binding.
	Segment string
	// Candidate is false for a node that only takes blocks from the
	// segment's delegation and never runs its client.
	Candidate bool
	// LeaseTTL is the election session's TTL (whole seconds, 2–10).
	LeaseTTL time.Duration
	// DUID of the segment's client; empty: the stored identity's, else a
	// random DUID-UUID created by the first ipamd of the segment.
	DUID dhcp6pd.DUID
	// IAID of the segment's IA_PD (0 in the file is refused; unset: 1, or
	// the stored identity's).
	IAID uint32
	// SubnetLength is the length of a network's slice of the delegated
	// prefix; BlockSize the length of what a node claims in a slice.
	SubnetLength, BlockSize int

	// set records which of duid, iaid, subnetLength, blockSize the file
	// gave: only those are compared with the stored identity (an unset key
	// takes the identity's value, it does not disagree with it).
	set map[string]bool
}

// Set reports whether the config file gave the cluster key (duid, iaid,
// subnetLength, blockSize).
func (c ClusterConfig) Set(key string) bool { return c.set[key] }

// Enabled reports whether the section turns PD on: cluster mode always,
// node mode when an interface is configured.
func (c Config) Enabled() bool { return c.Mode == ModeCluster || c.Interface != "" }

// ClientConfig is the dhcp6pd.Config of node mode: the same keys a plain
// decode of the section into dhcp6pd.Config gave before cluster mode.
func (c Config) ClientConfig() dhcp6pd.Config {
	return dhcp6pd.Config{Interface: c.Interface, PrefixLength: c.PrefixLength, DUID: c.DUID, IAID: c.IAID}
}

var segmentRE = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)

// ParseConfig decodes and checks ipamd's `pd` section (JSON; YAML is
// converted first). An empty section or null is node mode with nothing
// set. Unknown keys are errors naming the key; invalid values are errors
// naming key and value. Checks that need the final interface (a flag may
// set it) are left to Validate.
func ParseConfig(raw []byte) (Config, error) {
	c := Config{Mode: ModeNode}
	c.Cluster = ClusterConfig{Candidate: true, LeaseTTL: DefaultLeaseTTL, IAID: DefaultClusterIAID,
		SubnetLength: DefaultSubnetLength, BlockSize: DefaultBlockSize, set: map[string]bool{}}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return c, nil
	}
	top, err := object("pd", raw)
	if err != nil {
		return c, err
	}
	var clusterRaw json.RawMessage
	for _, key := range sortedKeys(top) {
		v := top[key]
		switch key {
		case "mode":
			s, err := str("pd.mode", v)
			if err != nil {
				return c, err
			}
			if s != ModeNode && s != ModeCluster {
				return c, fmt.Errorf("pd.mode: %q: want %q or %q", s, ModeNode, ModeCluster)
			}
			c.Mode = s
		case "interface":
			s, err := str("pd.interface", v)
			if err != nil {
				return c, err
			}
			if err := checkIfName(s); err != nil {
				return c, fmt.Errorf("pd.interface: %q: %w", s, err)
			}
			c.Interface = s
		case "prefixLength":
			n, err := integer("pd.prefixLength", v, 0, 128)
			if err != nil {
				return c, err
			}
			c.PrefixLength = int(n)
		case "duid":
			if c.DUID, err = duid("pd.duid", v); err != nil {
				return c, err
			}
		case "iaid":
			n, err := integer("pd.iaid", v, 0, math.MaxUint32)
			if err != nil {
				return c, err
			}
			c.IAID = uint32(n)
		case "cluster":
			clusterRaw = v
		default:
			return c, fmt.Errorf("pd: unknown key %q (known: mode, interface, prefixLength, duid, iaid, cluster)", key)
		}
	}
	if c.Mode == ModeCluster {
		if c.DUID != nil || c.IAID != 0 {
			k := "duid"
			if c.DUID == nil {
				k = "iaid"
			}
			return c, fmt.Errorf("pd.%s: a node-mode key; in mode cluster the segment's identity is cluster.%s", k, k)
		}
		if clusterRaw == nil {
			return c, errors.New("pd.cluster: required in mode cluster (at least cluster.segment)")
		}
		if err := c.Cluster.parse(clusterRaw); err != nil {
			return c, err
		}
	} else if clusterRaw != nil {
		return c, errors.New("pd.cluster: only in mode cluster (set pd.mode: cluster)")
	}
	return c, nil
}

func (cc *ClusterConfig) parse(raw json.RawMessage) error {
	m, err := object("pd.cluster", raw)
	if err != nil {
		return err
	}
	for _, key := range sortedKeys(m) {
		v, name := m[key], "pd.cluster."+key
		switch key {
		case "segment":
			s, err := str(name, v)
			if err != nil {
				return err
			}
			if !segmentRE.MatchString(s) {
				return fmt.Errorf("%s: %q: want 1 to 63 of [a-z0-9-]", name, s)
			}
			cc.Segment = s
		case "candidate":
			var b bool
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("%s: %s: want true or false", name, v)
			}
			cc.Candidate = b
		case "leaseTTL":
			d, err := duration(name, v)
			if err != nil {
				return err
			}
			if d%time.Second != 0 || d < 2*time.Second || d > 10*time.Second {
				return fmt.Errorf("%s: %s: want whole seconds from 2s to 10s (an etcd lease TTL)", name, d)
			}
			cc.LeaseTTL = d
		case "duid":
			if cc.DUID, err = duid(name, v); err != nil {
				return err
			}
		case "iaid":
			n, err := integer(name, v, 1, math.MaxUint32)
			if err != nil {
				return err
			}
			cc.IAID = uint32(n)
		case "subnetLength":
			n, err := integer(name, v, 1, MaxBlockSize)
			if err != nil {
				return err
			}
			cc.SubnetLength = int(n)
		case "blockSize":
			n, err := integer(name, v, 1, MaxBlockSize)
			if err != nil {
				return err
			}
			cc.BlockSize = int(n)
		default:
			return fmt.Errorf("pd.cluster: unknown key %q (known: segment, candidate, leaseTTL, duid, iaid, subnetLength, blockSize)", key)
		}
		cc.set[key] = true
	}
	if cc.Segment == "" {
		return errors.New("pd.cluster.segment: required in mode cluster")
	}
	if cc.BlockSize < cc.SubnetLength {
		return fmt.Errorf("pd.cluster.blockSize: %d: must be at least cluster.subnetLength (%d): a block lies inside a network's slice", cc.BlockSize, cc.SubnetLength)
	}
	return nil
}

// Validate checks what ParseConfig cannot: the interface, which a flag may
// have set after the file was parsed.
func (c Config) Validate() error {
	if err := checkIfName(c.Interface); err != nil {
		return fmt.Errorf("pd.interface: %q: %w", c.Interface, err)
	}
	if c.Mode == ModeCluster && c.Cluster.Candidate && c.Interface == "" {
		return fmt.Errorf("pd.interface: required for a candidate of segment %s (or set pd.cluster.candidate: false)", c.Cluster.Segment)
	}
	return nil
}

func object(name string, raw json.RawMessage) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, fmt.Errorf("%s: want a mapping of keys, got %s", name, clip(raw))
	}
	return m, nil
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func str(name string, v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("%s: %s: want a string", name, clip(v))
	}
	return s, nil
}

func integer(name string, v json.RawMessage, lo, hi int64) (int64, error) {
	var f float64
	if err := json.Unmarshal(v, &f); err != nil || f != math.Trunc(f) || f < float64(lo) || f > float64(hi) {
		return 0, fmt.Errorf("%s: %s: want an integer from %d to %d", name, clip(v), lo, hi)
	}
	return int64(f), nil
}

func duid(name string, v json.RawMessage) (dhcp6pd.DUID, error) {
	s, err := str(name, v)
	if err != nil {
		return nil, err
	}
	d, err := dhcp6pd.ParseDUID(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

// duration accepts a Go duration string ("3s") or a number of seconds.
func duration(name string, v json.RawMessage) (time.Duration, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: want a duration such as 3s", name, s)
		}
		return d, nil
	}
	var f float64
	if err := json.Unmarshal(v, &f); err != nil || f != math.Trunc(f) || f < 0 || f > 3600 {
		return 0, fmt.Errorf("%s: %s: want a duration such as 3s", name, clip(v))
	}
	return time.Duration(f) * time.Second, nil
}

func checkIfName(s string) error {
	if len(s) >= 16 {
		return errors.New("interface names have at most 15 characters")
	}
	if strings.ContainsAny(s, "/: \t\n") || s == "." || s == ".." {
		return errors.New("not an interface name")
	}
	return nil
}

// clip keeps error messages short when the value is a large object.
func clip(v json.RawMessage) string {
	if len(v) > 40 {
		return string(v[:40]) + "…"
	}
	return string(v)
}
