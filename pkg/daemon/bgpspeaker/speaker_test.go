package bgpspeaker

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"sort"
	"testing"

	apipb "github.com/osrg/gobgp/v3/api"
)

// ribEntry is a path in the speaker's own GoBGP table.
type ribEntry struct {
	nextHop     string
	communities []uint32
}

func localRIB(t *testing.T, s *Speaker) map[string]ribEntry {
	t.Helper()
	out := map[string]ribEntry{}
	for _, fam := range []*apipb.Family{familyIPv6, familyIPv4} {
		err := s.srv.ListPath(context.Background(), &apipb.ListPathRequest{TableType: apipb.TableType_GLOBAL, Family: fam},
			func(d *apipb.Destination) {
				for _, p := range d.GetPaths() {
					var e ribEntry
					for _, a := range p.GetPattrs() {
						m, err := a.UnmarshalNew()
						if err != nil {
							t.Fatal(err)
						}
						switch x := m.(type) {
						case *apipb.NextHopAttribute:
							e.nextHop = x.NextHop
						case *apipb.MpReachNLRIAttribute:
							e.nextHop = x.NextHops[0]
						case *apipb.CommunitiesAttribute:
							e.communities = x.Communities
						}
					}
					out[d.GetPrefix()] = e
				}
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestSpeakerReconcile runs a Speaker in this process (no root, no
// network: its one peer, 127.0.0.2, refuses the connection) and checks
// the paths it puts in its own table.
func TestSpeakerReconcile(t *testing.T) {
	cfg := testConfig()
	cfg.NextHop = netip.MustParseAddr("2001:db8::2")
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.SetRoutes(ctx, nil); !errors.Is(err, ErrNotRunning) {
		t.Errorf("SetRoutes before Start = %v, want ErrNotRunning", err)
	}
	p6 := netip.MustParsePrefix("2001:db8:1::/64")
	p4 := netip.MustParsePrefix("10.1.0.0/24")
	if err := s.Start(ctx, []Route{{Prefix: p6, Communities: []string{"no-export"}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx, nil); err == nil {
		t.Error("second Start succeeded")
	}
	want := map[string]ribEntry{"2001:db8:1::/64": {"2001:db8::2", []uint32{65001<<16 | 1, 0xFFFFFF01}}}
	if got := localRIB(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("after Start: RIB = %v, want %v", got, want)
	}

	if err := s.SetRoutes(ctx, []Route{{Prefix: p6}, {Prefix: p4}}); err != nil {
		t.Fatal(err)
	}
	want = map[string]ribEntry{
		"2001:db8:1::/64": {"2001:db8::2", []uint32{65001<<16 | 1}},
		"10.1.0.0/24":     {"0.0.0.0", []uint32{65001<<16 | 1}}, // next-hop-self on the IPv4 session
	}
	if got := localRIB(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("after SetRoutes: RIB = %v, want %v", got, want)
	}
	// An invalid set changes nothing.
	if err := s.SetRoutes(ctx, []Route{{Prefix: netip.MustParsePrefix("10.1.0.1/24")}}); err == nil {
		t.Error("SetRoutes accepted a prefix with host bits")
	}
	if got := localRIB(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("after a rejected SetRoutes: RIB = %v, want %v", got, want)
	}
	var prefixes []string
	for _, r := range s.Routes() {
		prefixes = append(prefixes, r.Prefix.String())
	}
	if !sort.StringsAreSorted(prefixes) || len(prefixes) != 2 {
		t.Errorf("Routes() = %v", prefixes)
	}

	if err := s.SetRoutes(ctx, []Route{{Prefix: p4}}); err != nil {
		t.Fatal(err)
	}
	if got := localRIB(t, s); len(got) != 1 || got["10.1.0.0/24"].nextHop == "" {
		t.Errorf("after withdrawing %s: RIB = %v", p6, got)
	}

	ps, err := s.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Address != netip.MustParseAddr("127.0.0.2") || ps[0].ASN != 65000 || ps[0].Established || ps[0].State == "" {
		t.Errorf("Peers() = %+v", ps)
	}

	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("second Stop = %v, want ErrNotRunning", err)
	}
	if _, err := s.Peers(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Peers after Stop = %v, want ErrNotRunning", err)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	if _, err := New(Config{}, nil); err == nil {
		t.Fatal("New accepted an empty config")
	}
}
