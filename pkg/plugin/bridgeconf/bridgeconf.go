// Package bridgeconf parses and validates the network configuration of the
// bridge-v6 CNI plugin. It is pure (no I/O), so every rule about what a valid
// configuration is lives here and is tested without root.
//
// Bad input is reported as a *types.Error: code 6 (ErrDecodingFailure) when
// the bytes are not the JSON object a CNI config must be, code 7
// (ErrInvalidNetworkConfig) when the JSON is fine but a value is not; the
// message names the field and the value.
package bridgeconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// DefaultBridge is the bridge used when the config names none.
const DefaultBridge = "v6cni0"

// MTU bounds. IPv6 requires every link to carry 1280-byte packets (RFC 8200
// section 5); 65535 is the largest MTU an IPv6 packet without jumbograms uses.
const (
	MinMTU = 1280
	MaxMTU = 65535
)

// VLAN IDs a port can be in: 0 and 4095 are reserved (IEEE 802.1Q). The
// bound is pkg/link's MaxVLAN, written out rather than imported: ipam-v6
// and pd-ipam parse bridge-v6's keys through this package, and importing
// pkg/link would link netlink into them. TestVLANBoundIsLinks keeps the
// two equal.
const (
	MinVLAN = 1
	MaxVLAN = 4094
)

// maxIfNameLen is IFNAMSIZ-1: the kernel refuses longer interface names.
const maxIfNameLen = 15

// The values of ipv6Mode: how the container gets its IPv6 address. They
// are ipamapi's (one definition for the plugins and ipamd), as strings.
const (
	IPv6ModeStatic          = string(ipamapi.IPv6ModeStatic)
	IPv6ModeSLAAC           = string(ipamapi.IPv6ModeSLAAC)
	IPv6ModeDHCPv6Stateless = string(ipamapi.IPv6ModeDHCPv6Stateless)
	IPv6ModeDHCPv6Stateful  = string(ipamapi.IPv6ModeDHCPv6Stateful)
)

// NetConf is the validated configuration of one bridge-v6 invocation.
type NetConf struct {
	types.PluginConf

	// Bridge is the name of the Linux bridge the host veth ends join.
	Bridge string
	// MTU of the bridge and both veth ends; 0 leaves the kernel default.
	MTU int
	// IsGateway puts each block's gateway address on the bridge.
	IsGateway bool
	// IsDefaultGateway adds default routes via the gateways in the
	// container; it implies IsGateway.
	IsDefaultGateway bool
	// EnableDAD keeps duplicate address detection on the container
	// addresses and makes ADD wait (at most DADTimeout) until none is
	// tentative; off, addresses are added with IFA_F_NODAD.
	EnableDAD bool
	// HairpinMode lets a frame leave the bridge port it came in on.
	HairpinMode bool
	// PromiscMode puts the bridge in promiscuous mode.
	PromiscMode bool
	// ForceAddress replaces a different gateway address of the same block
	// on the bridge instead of failing.
	ForceAddress bool
	// IPMasq masquerades IPv4 traffic of the containers that leaves
	// through another interface than the bridge; IPMasq6 does the same
	// for IPv6 (off by default: IPv6 addresses are routable).
	IPMasq  bool
	IPMasq6 bool
	// MACSpoofChk drops frames the container sends with a source MAC
	// other than its own (nftables, bridge family).
	MACSpoofChk bool
	// IPv6Mode is one of the IPv6Mode* values (default IPv6ModeStatic).
	IPv6Mode string
	// VLAN puts the host veth port in this access VLAN (PVID, untagged)
	// on a VLAN-filtering bridge; 0 is none, else MinVLAN..MaxVLAN.
	VLAN int
	// Provider puts the bridge on a provider network (an upstream segment
	// through a host uplink), nil for v6cni's own routed bridge.
	Provider *Provider
}

// Provider is the "provider" object: the bridge holds a host uplink (or a
// VLAN sub-interface of it) and the containers sit directly on the
// upstream segment, their default route the upstream router.
type Provider struct {
	// Master is the host interface that carries the provider network.
	Master string
	// VLANID, when not 0, makes the uplink the VLAN sub-interface
	// Uplink() of Master (created when missing).
	VLANID int
	// Gateway is the containers' IPv6 default gateway; invalid (the
	// zero Addr) when it is learned from the routers' advertisements.
	Gateway netip.Addr
	// OptimisticDAD makes the container addresses usable during their
	// duplicate address detection (RFC 4429); DAD itself is always on.
	OptimisticDAD bool
	// OnLink are the segment's IPv6 prefixes: the subnets of ipam.ranges
	// (ipam-v6's; another IPAM's section names none). A container
	// address inside one gets its prefix length, not that of the IPAM
	// block it came from: with blocks smaller than the segment (several
	// nodes sharing its /64), the whole segment, router included, is
	// still on-link.
	OnLink []netip.Prefix
}

// Uplink is the name of the interface enslaved to the bridge: Master, or
// "<master>.<vlanId>" cut to 15 bytes (the kernel's limit).
func (p *Provider) Uplink() string {
	if p.VLANID == 0 {
		return p.Master
	}
	name := p.Master + "." + strconv.Itoa(p.VLANID)
	if len(name) > maxIfNameLen {
		name = name[:maxIfNameLen]
	}
	return name
}

// SelfConfiguring reports whether the container configures its IPv6
// address itself (every mode but static): it accepts router
// advertisements, and the plugin does not add its IPv6 address.
func (c *NetConf) SelfConfiguring() bool {
	return ipamapi.IPv6Mode(c.IPv6Mode).SelfConfiguring()
}

// Autoconf reports whether the container's kernel forms its address by
// SLAAC (slaac and dhcpv6-stateless).
func (c *NetConf) Autoconf() bool {
	return ipamapi.IPv6Mode(c.IPv6Mode).Autoconf()
}

// rawConf is what users write. Booleans are pointers so that an absent key
// can take its default (isGateway defaults to true); the CNI standard keys
// come from the embedded PluginConf.
type rawConf struct {
	types.PluginConf
	Bridge           *string `json:"bridge"`
	MTU              *int    `json:"mtu"`
	IsGateway        *bool   `json:"isGateway"`
	IsDefaultGateway *bool   `json:"isDefaultGateway"`
	EnableDAD        *bool   `json:"enableDad"`
	HairpinMode      *bool   `json:"hairpinMode"`
	PromiscMode      *bool   `json:"promiscMode"`
	ForceAddress     *bool   `json:"forceAddress"`
	IPMasq           *bool   `json:"ipMasq"`
	IPMasq6          *bool   `json:"ipMasq6"`
	MACSpoofChk      *bool   `json:"macspoofchk"`
	IPv6Mode         *string `json:"ipv6Mode"`
	VLAN             *int    `json:"vlan"`
	Provider         *struct {
		Master        *string `json:"master"`
		VLANID        *int    `json:"vlanId"`
		Gateway       *string `json:"gateway"`
		OptimisticDAD *bool   `json:"optimisticDad"`
	} `json:"provider"`
}

// Parse decodes and validates a bridge-v6 configuration (the stdin of a CNI
// call). It never panics; every error it returns is a *types.Error.
func Parse(data []byte) (*NetConf, error) {
	var raw rawConf
	if err := decode(data, &raw); err != nil {
		return nil, err
	}

	conf := &NetConf{
		PluginConf: raw.PluginConf,
		Bridge:     DefaultBridge,
		IsGateway:  true,
		IPv6Mode:   IPv6ModeStatic,
	}
	if raw.IPv6Mode != nil {
		conf.IPv6Mode = *raw.IPv6Mode
	}
	if raw.Bridge != nil {
		conf.Bridge = *raw.Bridge
	}
	if raw.MTU != nil {
		conf.MTU = *raw.MTU
	}
	if raw.VLAN != nil {
		conf.VLAN = *raw.VLAN
	}
	if raw.IsGateway != nil {
		conf.IsGateway = *raw.IsGateway
	}
	if raw.IsDefaultGateway != nil {
		conf.IsDefaultGateway = *raw.IsDefaultGateway
	}
	for _, b := range []struct {
		dst *bool
		src *bool
	}{
		{&conf.EnableDAD, raw.EnableDAD},
		{&conf.HairpinMode, raw.HairpinMode},
		{&conf.PromiscMode, raw.PromiscMode},
		{&conf.ForceAddress, raw.ForceAddress},
		{&conf.IPMasq, raw.IPMasq},
		{&conf.IPMasq6, raw.IPMasq6},
		{&conf.MACSpoofChk, raw.MACSpoofChk},
	} {
		if b.src != nil {
			*b.dst = *b.src
		}
	}
	if raw.Provider != nil {
		if err := conf.parseProvider(&raw, data); err != nil {
			return nil, err
		}
	}
	// A default route needs a gateway, and the only gateway this plugin
	// knows is the one it puts on the bridge.
	if conf.IsDefaultGateway {
		conf.IsGateway = true
	}

	if err := conf.validate(); err != nil {
		return nil, err
	}

	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("prevResult: %v", err), "")
	}
	return conf, nil
}

// decode unmarshals data into raw: undecodable JSON and a value of the
// wrong JSON type are both code 6 (ErrDecodingFailure, as ipamconf
// answers), the latter naming the field; a decodable value that is wrong
// is validate's code 7.
func decode(data []byte, raw *rawConf) error {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return types.NewError(types.ErrDecodingFailure, "decode network config: not a JSON object", "")
	}
	err := json.Unmarshal(data, raw)
	if err == nil {
		// After Unmarshal, which bounds the nesting the walk must follow.
		return ipamconf.CheckDocument("network config", data)
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		// A value of the wrong JSON type fails to unmarshal: code 6, as
		// ipam-v6 answers for its section. The embedded struct's name is
		// no part of the config the author wrote.
		field := strings.TrimPrefix(typeErr.Field, "PluginConf.")
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("decode network config: %s: want %s, got JSON %s", field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value), "")
	}
	return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode network config: %v", err), "")
}

// jsonKind names a Go kind the way a config author thinks of it.
func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "number"
	case "bool":
		return "boolean"
	case "struct", "map":
		return "object"
	case "slice", "array":
		return "array"
	}
	return goKind
}

// parseProvider reads the provider object and refuses the keys that
// contradict it, naming them (code 7). On a provider network the upstream
// router is the gateway: v6cni puts no address on the bridge and routes
// nothing, so isGateway defaults to false; DAD is always on (v6cni is not
// the only allocator on the segment).
func (c *NetConf) parseProvider(raw *rawConf, data []byte) error {
	rp := raw.Provider
	p := &Provider{OptimisticDAD: true}
	if rp.Master == nil || *rp.Master == "" {
		return invalid("provider.master: missing (the host interface that carries the provider network)")
	}
	p.Master = *rp.Master
	if err := validIfName(p.Master); err != nil {
		return invalid(fmt.Sprintf("provider.master: %q %v", p.Master, err))
	}
	if p.Master == c.Bridge {
		return invalid(fmt.Sprintf("provider.master: %q is the bridge itself (name the host interface the bridge is to hold)", p.Master))
	}
	if rp.VLANID != nil {
		p.VLANID = *rp.VLANID
		if p.VLANID < MinVLAN || p.VLANID > MaxVLAN {
			return invalid(fmt.Sprintf("provider.vlanId: %d out of range (%d..%d; omit it for an untagged uplink)", p.VLANID, MinVLAN, MaxVLAN))
		}
	}
	if rp.Gateway != nil {
		gw, err := netip.ParseAddr(*rp.Gateway)
		if err != nil || !gw.Is6() || gw.Is4In6() || gw.Zone() != "" || gw.IsUnspecified() || gw.IsMulticast() || gw.IsLoopback() {
			return invalid(fmt.Sprintf("provider.gateway: %q is not an IPv6 unicast address", *rp.Gateway))
		}
		p.Gateway = gw
	}
	if rp.OptimisticDAD != nil {
		p.OptimisticDAD = *rp.OptimisticDAD
	}
	for _, b := range []struct {
		key string
		val *bool
		why string
	}{
		{"isGateway", raw.IsGateway, "the upstream router is the gateway, v6cni puts no address on the bridge"},
		{"isDefaultGateway", raw.IsDefaultGateway, "the default route is the upstream router (provider.gateway or its router advertisements)"},
		{"ipMasq", raw.IPMasq, "the node routes nothing for a provider network"},
		{"ipMasq6", raw.IPMasq6, "the node routes nothing for a provider network"},
		{"hairpinMode", raw.HairpinMode, "hairpin reflects DAD probes, and DAD is always on for a provider network"},
	} {
		if b.val != nil && *b.val {
			return invalid(fmt.Sprintf("%s: true cannot be combined with provider (%s)", b.key, b.why))
		}
	}
	if raw.EnableDAD != nil && !*raw.EnableDAD {
		return invalid("enableDad: false cannot be combined with provider (other hosts share the segment: DAD is always on)")
	}
	if raw.VLAN != nil && *raw.VLAN != 0 {
		return invalid(fmt.Sprintf("vlan: %d cannot be combined with provider (use provider.vlanId for the uplink's VLAN)", *raw.VLAN))
	}
	if mode := ipamapi.IPv6Mode(c.IPv6Mode); mode.Valid() && mode.Autoconf() {
		// The IPAM section is the IPAM plugin's to parse; only its
		// addressing matters here (decoded already once: no error).
		var ipam struct {
			IPAM struct {
				Addressing any `json:"addressing"`
			} `json:"ipam"`
		}
		_ = json.Unmarshal(data, &ipam)
		if ipam.IPAM.Addressing != ipamconf.EUI64 {
			got, _ := json.Marshal(ipam.IPAM.Addressing)
			return invalid(fmt.Sprintf("ipam.addressing: %s: ipv6Mode %q on a provider network needs an IPAM with addressing %q (the container's kernel forms the EUI-64 address of its MAC from the upstream router's prefix, so IPAM must hand out that one)",
				got, c.IPv6Mode, ipamconf.EUI64))
		}
	}
	p.OnLink = ipamSubnets6(data)
	c.Provider = p
	c.IsGateway = false
	c.EnableDAD = true
	return nil
}

// ipamSubnets6 are the IPv6 subnets of the config's ipam.ranges, read
// leniently (the ipam section is the IPAM plugin's to validate): none when
// it has another shape.
func ipamSubnets6(data []byte) []netip.Prefix {
	var conf struct {
		IPAM struct {
			Ranges [][]struct {
				Subnet string `json:"subnet"`
			} `json:"ranges"`
		} `json:"ipam"`
	}
	if json.Unmarshal(data, &conf) != nil {
		return nil
	}
	var out []netip.Prefix
	for _, set := range conf.IPAM.Ranges {
		for _, r := range set {
			if p, err := netip.ParsePrefix(r.Subnet); err == nil && p.Addr().Is6() && !p.Addr().Is4In6() && p == p.Masked() {
				out = append(out, p)
			}
		}
	}
	return out
}

func (c *NetConf) validate() error {
	if c.Name == "" {
		return invalid("name: missing")
	}
	if err := validIfName(c.Bridge); err != nil {
		return invalid(fmt.Sprintf("bridge: %q %v", c.Bridge, err))
	}
	if c.MTU != 0 && (c.MTU < MinMTU || c.MTU > MaxMTU) {
		return invalid(fmt.Sprintf("mtu: %d out of range (0 for the kernel default, or %d..%d)", c.MTU, MinMTU, MaxMTU))
	}
	if c.VLAN != 0 && (c.VLAN < MinVLAN || c.VLAN > MaxVLAN) {
		return invalid(fmt.Sprintf("vlan: %d out of range (0 for none, or %d..%d)", c.VLAN, MinVLAN, MaxVLAN))
	}
	// Hairpin reflects the container's own neighbour solicitations back
	// to it: DAD then always fails (kubernetes#32291).
	if c.EnableDAD && c.HairpinMode {
		return invalid("enableDad: true cannot be combined with hairpinMode: true (hairpin reflects DAD probes, every address would be a duplicate)")
	}
	if !ipamapi.IPv6Mode(c.IPv6Mode).Valid() {
		return invalid("ipv6Mode: " + ipamapi.IPv6ModeError(ipamapi.IPv6Mode(c.IPv6Mode)))
	}
	// ipamd sends router advertisements and answers DHCPv6 on the bridge
	// itself, which is the untagged member of VLAN 1 only.
	if c.VLAN > MinVLAN && c.SelfConfiguring() {
		return invalid(fmt.Sprintf("vlan: %d cannot be combined with ipv6Mode %q (router advertisements and DHCPv6 are served on the bridge itself, in VLAN 1 only)", c.VLAN, c.IPv6Mode))
	}
	if c.IPAM.Type == "" {
		return invalid("ipam.type: missing")
	}
	// The IPAM type is exec'd from CNI_PATH: a path would escape it.
	if strings.ContainsAny(c.IPAM.Type, `/\`) || c.IPAM.Type == "." || c.IPAM.Type == ".." {
		return invalid(fmt.Sprintf("ipam.type: %q is not a plugin name", c.IPAM.Type))
	}
	return nil
}

// validIfName applies the kernel's rules for interface names (dev_valid_name).
func validIfName(name string) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > maxIfNameLen:
		return fmt.Errorf("is longer than %d bytes", maxIfNameLen)
	case name == "." || name == "..":
		return errors.New("is not a valid interface name")
	}
	for _, r := range name {
		if r == '/' || r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("contains %q", r)
		}
	}
	return nil
}

func invalid(msg string) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, msg, "")
}
