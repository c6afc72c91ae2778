package ra

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
)

var testMAC = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}

func baseConfig(mode string) Config {
	return Config{
		Interface: "v6br0",
		Mode:      mode,
		Prefixes:  Prefixes(netip.MustParsePrefix("2001:db8:cafe:3::/64")),
		MTU:       1400,
		DNS:       []netip.Addr{netip.MustParseAddr("2001:db8:cafe:a::e"), netip.MustParseAddr("10.0.0.53")},
		Search:    []string{"example.com", "svc.example.com"},
	}
}

// roundTrip marshals the RA of cfg and parses the bytes back.
func roundTrip(t *testing.T, cfg Config) *ndp.RouterAdvertisement {
	t.Helper()
	ra, err := Advertisement(cfg, testMAC)
	if err != nil {
		t.Fatalf("Advertisement: %v", err)
	}
	b, err := ndp.MarshalMessage(ra)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	if b[0] != 134 || b[1] != 0 {
		t.Fatalf("ICMPv6 type/code %d/%d, want 134/0", b[0], b[1])
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		t.Fatalf("parse back: %v", err)
	}
	got, ok := m.(*ndp.RouterAdvertisement)
	if !ok {
		t.Fatalf("parsed %T, want a router advertisement", m)
	}
	return got
}

func options[T ndp.Option](ra *ndp.RouterAdvertisement) []T {
	var out []T
	for _, o := range ra.Options {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func TestAdvertisementFlagsPerMode(t *testing.T) {
	for _, tc := range []struct {
		mode    string
		m, o, a bool
	}{
		{ModeSLAAC, false, false, true},
		{ModeDHCPv6Stateless, false, true, true},
		{ModeDHCPv6Stateful, true, true, false},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ra := roundTrip(t, baseConfig(tc.mode))
			if ra.ManagedConfiguration != tc.m || ra.OtherConfiguration != tc.o {
				t.Errorf("M=%v O=%v, want M=%v O=%v", ra.ManagedConfiguration, ra.OtherConfiguration, tc.m, tc.o)
			}
			if ra.CurrentHopLimit != 64 {
				t.Errorf("hop limit %d, want 64", ra.CurrentHopLimit)
			}
			if ra.RouterLifetime != 1800*time.Second {
				t.Errorf("router lifetime %s, want 1800s (3 × max interval)", ra.RouterLifetime)
			}
			pis := options[*ndp.PrefixInformation](ra)
			if len(pis) != 1 {
				t.Fatalf("%d prefix options, want 1", len(pis))
			}
			pi := pis[0]
			if pi.Prefix != netip.MustParseAddr("2001:db8:cafe:3::") || pi.PrefixLength != 64 {
				t.Errorf("prefix %s/%d", pi.Prefix, pi.PrefixLength)
			}
			if !pi.OnLink || pi.AutonomousAddressConfiguration != tc.a {
				t.Errorf("L=%v A=%v, want L=true A=%v", pi.OnLink, pi.AutonomousAddressConfiguration, tc.a)
			}
			if pi.ValidLifetime != DefaultValidLifetime || pi.PreferredLifetime != DefaultPreferredLifetime {
				t.Errorf("lifetimes valid %s preferred %s", pi.ValidLifetime, pi.PreferredLifetime)
			}
			if mtus := options[*ndp.MTU](ra); len(mtus) != 1 || mtus[0].MTU != 1400 {
				t.Errorf("MTU options %v, want one of 1400", mtus)
			}
			rdnss := options[*ndp.RecursiveDNSServer](ra)
			if len(rdnss) != 1 || len(rdnss[0].Servers) != 1 || rdnss[0].Servers[0] != netip.MustParseAddr("2001:db8:cafe:a::e") {
				t.Errorf("RDNSS %+v, want only the IPv6 server", rdnss)
			} else if rdnss[0].Lifetime != 1800*time.Second {
				t.Errorf("RDNSS lifetime %s, want 1800s", rdnss[0].Lifetime)
			}
			dnssl := options[*ndp.DNSSearchList](ra)
			if len(dnssl) != 1 || strings.Join(dnssl[0].DomainNames, ",") != "example.com,svc.example.com" {
				t.Errorf("DNSSL %+v", dnssl)
			}
			lla := options[*ndp.LinkLayerAddress](ra)
			if len(lla) != 1 || lla[0].Direction != ndp.Source || lla[0].Addr.String() != testMAC.String() {
				t.Errorf("source link-layer option %+v", lla)
			}
		})
	}
}

func TestAdvertisementOptionalParts(t *testing.T) {
	cfg := Config{Interface: "br", Mode: ModeSLAAC, RouterLifetime: NoDefaultRouter}
	ra := roundTrip(t, cfg)
	if ra.RouterLifetime != 0 {
		t.Errorf("router lifetime %s, want 0 with NoDefaultRouter", ra.RouterLifetime)
	}
	if len(ra.Options) != 1 { // only the source link-layer address
		t.Errorf("options %v, want only the source link-layer address", ra.Options)
	}

	cfg = baseConfig(ModeSLAAC)
	cfg.RouterLifetime = 90 * time.Second
	cfg.MaxInterval = 30 * time.Second
	cfg.ValidLifetime = time.Hour
	cfg.PreferredLifetime = 30 * time.Minute
	ra = roundTrip(t, cfg)
	if ra.RouterLifetime != 90*time.Second {
		t.Errorf("router lifetime %s", ra.RouterLifetime)
	}
	pi := options[*ndp.PrefixInformation](ra)[0]
	if pi.ValidLifetime != time.Hour || pi.PreferredLifetime != 30*time.Minute {
		t.Errorf("lifetimes %s/%s", pi.ValidLifetime, pi.PreferredLifetime)
	}
	if l := options[*ndp.RecursiveDNSServer](ra)[0].Lifetime; l != 90*time.Second {
		t.Errorf("RDNSS lifetime %s, want 3 × 30s", l)
	}
}

func TestBuildFinalAndWithdrawn(t *testing.T) {
	c, err := baseConfig(ModeDHCPv6Stateless).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	old := netip.MustParsePrefix("2001:db8:cafe:9::/64")
	ra := build(c, nil, []netip.Prefix{old}, true, time.Now())
	b, err := ndp.MarshalMessage(ra)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	got := m.(*ndp.RouterAdvertisement)
	if got.RouterLifetime != 0 {
		t.Errorf("final RA has router lifetime %s, want 0", got.RouterLifetime)
	}
	pis := options[*ndp.PrefixInformation](got)
	if len(pis) != 2 {
		t.Fatalf("%d prefixes, want the current one and the withdrawn one", len(pis))
	}
	if pis[0].ValidLifetime == 0 {
		t.Errorf("the current prefix keeps its lifetimes in the final RA")
	}
	if pis[1].Prefix != old.Addr() || pis[1].ValidLifetime != 0 || pis[1].PreferredLifetime != 0 {
		t.Errorf("withdrawn prefix %+v, want lifetimes 0", pis[1])
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; "" means valid
	}{
		{"ok", func(*Config) {}, ""},
		{"no interface", func(c *Config) { c.Interface = "" }, "interface"},
		{"bad mode", func(c *Config) { c.Mode = "static" }, `mode "static"`},
		{"ipv4 prefix", func(c *Config) { c.Prefixes = Prefixes(netip.MustParsePrefix("10.0.0.0/24")) }, "not an IPv6 prefix"},
		{"/56 in slaac", func(c *Config) { c.Prefixes = Prefixes(netip.MustParsePrefix("2001:db8::/56")) }, "needs /64"},
		{"/56 in stateful", func(c *Config) {
			c.Mode = ModeDHCPv6Stateful
			c.Prefixes = Prefixes(netip.MustParsePrefix("2001:db8::/56"))
		}, ""},
		{"mtu", func(c *Config) { c.MTU = 1000 }, "mtu 1000"},
		{"interval", func(c *Config) { c.MaxInterval = time.Second }, "max interval"},
		{"router lifetime", func(c *Config) { c.RouterLifetime = 3 * time.Hour }, "router lifetime"},
		{"lifetimes", func(c *Config) { c.ValidLifetime, c.PreferredLifetime = time.Minute, time.Hour }, "preferred"},
		{"search", func(c *Config) { c.Search = []string{"bad domain\x00"} }, "search domain"},
		{"prefix lifetimes", func(c *Config) {
			c.Prefixes = []Prefix{{Prefix: netip.MustParsePrefix("2001:db8::/64"), Preferred: time.Hour, Valid: time.Minute}}
		}, "prefix 2001:db8::/64: lifetimes"},
		{"negative prefix lifetime", func(c *Config) {
			c.Prefixes = []Prefix{{Prefix: netip.MustParsePrefix("2001:db8::/64"), Valid: -time.Second}}
		}, "prefix 2001:db8::/64: lifetimes"},
		{"preferred defaults capped to a short valid", func(c *Config) {
			c.Prefixes = []Prefix{{Prefix: netip.MustParsePrefix("2001:db8::/64"), Valid: time.Minute}}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := baseConfig(ModeSLAAC)
			tc.mod(&c)
			_, err := New(c, nil)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("New accepted the config, want an error with %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestHostBitsMaskedAndDuplicatesDropped(t *testing.T) {
	cfg := baseConfig(ModeSLAAC)
	cfg.Prefixes = Prefixes(netip.MustParsePrefix("2001:db8:cafe:3::1/64"), netip.MustParsePrefix("2001:db8:cafe:3::/64"))
	ra := roundTrip(t, cfg)
	if pis := options[*ndp.PrefixInformation](ra); len(pis) != 1 || pis[0].Prefix != netip.MustParseAddr("2001:db8:cafe:3::") {
		t.Fatalf("prefixes %+v, want one masked 2001:db8:cafe:3::/64", pis)
	}
}

func TestNextInterval(t *testing.T) {
	for sent := range 10 {
		for range 100 {
			d := nextInterval(600*time.Second, sent)
			if d < 198*time.Second && !(sent < maxInitialAdvertisements && d == maxInitialInterval) {
				t.Fatalf("interval %s after %d RAs below MinRtrAdvInterval", d, sent)
			}
			if d > 600*time.Second || (sent < maxInitialAdvertisements && d > maxInitialInterval) {
				t.Fatalf("interval %s after %d RAs too long", d, sent)
			}
		}
	}
	if d := nextInterval(4*time.Second, 5); d < 3*time.Second || d > 4*time.Second {
		t.Fatalf("interval %s with max 4s, want 3s..4s", d)
	}
}

// TestPerPrefixLifetimes: each prefix carries its own lifetimes on the
// wire; zero means the Config's; Deprecated says preferred 0; deadlines
// cap what is left at the time the RA is built.
func TestPerPrefixLifetimes(t *testing.T) {
	now := time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	for _, tc := range []struct {
		name            string
		cfgPref, cfgVal time.Duration // Config.PreferredLifetime, ValidLifetime
		in              Prefix
		pref, valid     time.Duration // on the wire
	}{
		{"defaults", 0, 0, Prefix{}, DefaultPreferredLifetime, DefaultValidLifetime},
		{"config's", 30 * time.Minute, time.Hour, Prefix{}, 30 * time.Minute, time.Hour},
		{"own", 30 * time.Minute, time.Hour, Prefix{Preferred: 100 * time.Second, Valid: 200 * time.Second}, 100 * time.Second, 200 * time.Second},
		{"own valid below the config's preferred", 30 * time.Minute, time.Hour, Prefix{Valid: 90 * time.Second}, 90 * time.Second, 90 * time.Second},
		{"deprecated", 0, 0, Prefix{Deprecated: true, Valid: 90 * time.Second}, 0, 90 * time.Second},
		{"deprecated with default valid", 0, 0, Prefix{Deprecated: true, Preferred: time.Hour}, 0, DefaultValidLifetime},
		{"deadlines cap", 0, 0, Prefix{ValidUntil: now.Add(150*time.Second + 900*time.Millisecond), PreferredUntil: now.Add(70 * time.Second)}, 70 * time.Second, 150 * time.Second},
		{"deadline beyond the lifetime", 0, 0, Prefix{Valid: time.Hour, ValidUntil: now.Add(48 * time.Hour)}, time.Hour, time.Hour},
		{"preferred deadline past: deprecated", 0, 0, Prefix{PreferredUntil: now.Add(-time.Second), ValidUntil: now.Add(time.Minute)}, 0, time.Minute},
		{"valid deadline past: 0", 0, 0, Prefix{ValidUntil: now.Add(-time.Second)}, 0, 0},
		{"preferred deadline after valid's", 0, 0, Prefix{PreferredUntil: now.Add(time.Hour), ValidUntil: now.Add(time.Minute)}, time.Minute, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(ModeSLAAC)
			cfg.PreferredLifetime, cfg.ValidLifetime = tc.cfgPref, tc.cfgVal
			second := Prefix{Prefix: p("2001:db8:cafe:4::/64")}
			tc.in.Prefix = p("2001:db8:cafe:3::/64")
			cfg.Prefixes = []Prefix{tc.in, second}
			c, err := cfg.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			b, err := ndp.MarshalMessage(build(c, testMAC, nil, false, now))
			if err != nil {
				t.Fatal(err)
			}
			m, err := ndp.ParseMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			pis := options[*ndp.PrefixInformation](m.(*ndp.RouterAdvertisement))
			if len(pis) != 2 {
				t.Fatalf("%d prefix options, want 2", len(pis))
			}
			if pis[0].Prefix != tc.in.Prefix.Addr() || pis[0].PreferredLifetime != tc.pref || pis[0].ValidLifetime != tc.valid {
				t.Errorf("%s: preferred %s valid %s, want %s, %s", pis[0].Prefix, pis[0].PreferredLifetime, pis[0].ValidLifetime, tc.pref, tc.valid)
			}
			// The other prefix keeps the Config's lifetimes.
			wantPref, wantValid := cmp(tc.cfgPref, DefaultPreferredLifetime), cmp(tc.cfgVal, DefaultValidLifetime)
			if pis[1].PreferredLifetime != wantPref || pis[1].ValidLifetime != wantValid {
				t.Errorf("second prefix: preferred %s valid %s, want %s, %s", pis[1].PreferredLifetime, pis[1].ValidLifetime, wantPref, wantValid)
			}
		})
	}
}

// cmp is d, or def when d is 0.
func cmp(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// TestMulticastDelay: an Update's RA goes out at once unless the last
// multicast RA is younger than MIN_DELAY_BETWEEN_RAS; then when it is 3 s
// old, never later.
func TestMulticastDelay(t *testing.T) {
	now := time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		last  time.Duration // before now
		sent  int
		delay time.Duration
		want  time.Duration
	}{
		{"first RA", 0, 0, 0, 0},
		{"last one long ago", time.Minute, 5, 0, 0},
		{"last one 3 s ago", 3 * time.Second, 5, 0, 0},
		{"last one 1 s ago", time.Second, 5, 0, 2 * time.Second},
		{"last one just now", 0, 5, 0, 3 * time.Second},
		{"solicitation delay beyond the minimum", 2900 * time.Millisecond, 5, 400 * time.Millisecond, 400 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mcastDelay(now, now.Add(-tc.last), tc.sent, tc.delay); got != tc.want {
				t.Fatalf("delay %s, want %s", got, tc.want)
			}
		})
	}
}

// TestUpdateSignals: an Update whose content changed (here only a
// prefix's deadline or its Deprecated flag) schedules an RA; one that
// changes nothing does not.
func TestUpdateSignals(t *testing.T) {
	until := time.Now().Add(time.Hour)
	cfg := baseConfig(ModeSLAAC)
	cfg.Prefixes = []Prefix{{Prefix: netip.MustParsePrefix("2001:db8:cafe:3::/64"), ValidUntil: until}}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	signalled := func() bool {
		select {
		case <-s.updated:
			return true
		default:
			return false
		}
	}
	steps := []struct {
		name string
		mod  func(*Config)
		want bool
	}{
		{"same", func(*Config) {}, false},
		{"same deadline, other location", func(c *Config) { c.Prefixes[0].ValidUntil = until.In(time.FixedZone("x", 3600)) }, false},
		{"deadline moved", func(c *Config) { c.Prefixes[0].ValidUntil = until.Add(time.Second) }, true},
		{"deprecated", func(c *Config) { c.Prefixes[0].ValidUntil = until.Add(time.Second); c.Prefixes[0].Deprecated = true }, true},
		{"second prefix", func(c *Config) {
			c.Prefixes[0].ValidUntil = until.Add(time.Second)
			c.Prefixes[0].Deprecated = true
			c.Prefixes = append(c.Prefixes, Prefix{Prefix: netip.MustParsePrefix("2001:db8:cafe:4::/64")})
		}, true},
	}
	for _, st := range steps {
		c := cfg
		c.Prefixes = slices.Clone(cfg.Prefixes)
		st.mod(&c)
		if err := s.Update(c); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := signalled(); got != st.want {
			t.Fatalf("%s: RA scheduled %v, want %v", st.name, got, st.want)
		}
	}
}

func TestWithdraw(t *testing.T) {
	a, b, c := Prefixes(netip.MustParsePrefix("2001:db8:a::/64"))[0], Prefixes(netip.MustParsePrefix("2001:db8:b::/64"))[0], Prefixes(netip.MustParsePrefix("2001:db8:c::/64"))[0]
	w := withdraw(nil, []Prefix{a, b}, []Prefix{{Prefix: b.Prefix, Deprecated: true}, c})
	if len(w) != 1 || w[0].prefix != a.Prefix || w[0].left != withdrawnAdvertisements {
		t.Fatalf("withdrawn %+v, want only %s (b is deprecated, not withdrawn)", w, a.Prefix)
	}
	if w = withdraw(w, []Prefix{b, c}, []Prefix{a, c}); len(w) != 1 || w[0].prefix != b.Prefix {
		t.Fatalf("withdrawn %+v, want only %s (a is back)", w, b.Prefix)
	}
}
