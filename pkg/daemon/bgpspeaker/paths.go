package bgpspeaker

import (
	"fmt"

	apipb "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

var (
	familyIPv6 = &apipb.Family{Afi: apipb.Family_AFI_IP6, Safi: apipb.Family_SAFI_UNICAST}
	familyIPv4 = &apipb.Family{Afi: apipb.Family_AFI_IP, Safi: apipb.Family_SAFI_UNICAST}
)

func apiFamily(f Family) *apipb.Family {
	if f == IPv4Unicast {
		return familyIPv4
	}
	return familyIPv6
}

// apiPath builds the GoBGP path of an announcement. IPv6 prefixes carry
// MP_REACH_NLRI with cfg.NextHop, or "::" (the session's local address).
// IPv4 prefixes carry NEXT_HOP cfg.NextHopIPv4, or 0.0.0.0 (the session's
// local address, only right on IPv4 sessions: Validate insists on
// NextHopIPv4 when IPv4 goes over IPv6).
func apiPath(cfg *Config, a announcement) (*apipb.Path, error) {
	nlri, err := anypb.New(&apipb.IPAddressPrefix{
		Prefix:    a.prefix.Addr().String(),
		PrefixLen: uint32(a.prefix.Bits()),
	})
	if err != nil {
		return nil, err
	}
	attrs := []proto.Message{&apipb.OriginAttribute{Origin: 0}} // IGP
	fam := apiFamily(a.family())
	if a.family() == IPv6Unicast {
		nh := "::"
		if cfg.NextHop.IsValid() {
			nh = cfg.NextHop.String()
		}
		attrs = append(attrs, &apipb.MpReachNLRIAttribute{Family: fam, NextHops: []string{nh}, Nlris: []*anypb.Any{nlri}})
	} else {
		nh := "0.0.0.0"
		if cfg.NextHopIPv4.IsValid() {
			nh = cfg.NextHopIPv4.String()
		}
		attrs = append(attrs, &apipb.NextHopAttribute{NextHop: nh})
	}
	if len(a.communities) > 0 {
		attrs = append(attrs, &apipb.CommunitiesAttribute{Communities: a.communities})
	}
	pattrs := make([]*anypb.Any, 0, len(attrs))
	for _, m := range attrs {
		x, err := anypb.New(m)
		if err != nil {
			return nil, fmt.Errorf("bgp: path attribute for %s: %w", a.prefix, err)
		}
		pattrs = append(pattrs, x)
	}
	return &apipb.Path{Family: fam, Nlri: nlri, Pattrs: pattrs}, nil
}
