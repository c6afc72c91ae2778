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
