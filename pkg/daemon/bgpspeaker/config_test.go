package bgpspeaker

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(`{"asn": 65001, "routerID": "10.0.0.1",
		"peers": [{"address": "2001:db8::1", "asn": 65000}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.ListenPort != 0 {
		t.Errorf("listenPort = %d, want 0 (no listener)", c.ListenPort)
	}
	if !c.GracefulRestart.IsEnabled() || c.GracefulRestart.RestartTime != DefaultRestartTime {
		t.Errorf("gracefulRestart = %+v, want enabled, %d s", c.GracefulRestart, DefaultRestartTime)
	}
	if c.Peers[0].HoldTime != DefaultHoldTime {
		t.Errorf("holdTime = %d, want %d", c.Peers[0].HoldTime, DefaultHoldTime)
	}
	if !reflect.DeepEqual(c.Families, []Family{IPv6Unicast}) {
		t.Errorf("families = %v, want [ipv6-unicast] (IPv6 peer, no nextHopIPv4)", c.Families)
	}
	if c.NextHop.IsValid() {
		t.Errorf("nextHop = %v, want unset (next-hop-self)", c.NextHop)
	}

	c, err = ParseConfig([]byte(`{"asn": 65001, "routerID": "10.0.0.1", "nextHopIPv4": "192.0.2.2",
		"gracefulRestart": {"enabled": false},
		"peers": [{"address": "2001:db8::1", "asn": 65000}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Families, []Family{IPv6Unicast, IPv4Unicast}) {
		t.Errorf("families = %v, want both when nextHopIPv4 is set", c.Families)
	}
	if c.GracefulRestart.IsEnabled() {
		t.Error("gracefulRestart.enabled: false was ignored")
	}
}

func TestParseConfigErrors(t *testing.T) {
	const peer = `"peers": [{"address": "2001:db8::1", "asn": 65000}]`
	tests := []struct {
		name, json string
		want       []string // substrings of the error
	}{
		{"no asn", `{"routerID": "10.0.0.1", ` + peer + `}`, []string{"bgp.asn"}},
		{"ipv6 router id", `{"asn": 1, "routerID": "2001:db8::1", ` + peer + `}`, []string{`bgp.routerID "2001:db8::1"`}},
		{"no router id", `{"asn": 1, ` + peer + `}`, []string{`bgp.routerID ""`}},
		{"bad router id", `{"asn": 1, "routerID": "banana", ` + peer + `}`, []string{"banana"}},
		{"no peers", `{"asn": 1, "routerID": "10.0.0.1"}`, []string{"bgp.peers"}},
		{"listen port", `{"asn": 1, "routerID": "10.0.0.1", "listenPort": 70000, ` + peer + `}`, []string{"bgp.listenPort 70000"}},
		{"unknown field", `{"asn": 1, "routerID": "10.0.0.1", "neighbours": [], ` + peer + `}`, []string{"neighbours"}},
		{"unknown family", `{"asn": 1, "routerID": "10.0.0.1", "families": ["l2vpn-evpn"], ` + peer + `}`, []string{`bgp.families "l2vpn-evpn"`}},
		{"ipv4 over ipv6 without next hop", `{"asn": 1, "routerID": "10.0.0.1", "families": ["ipv4-unicast"], ` + peer + `}`,
			[]string{"bgp.nextHopIPv4", `peers[0] "2001:db8::1"`}},
		{"v4 next hop in nextHop", `{"asn": 1, "routerID": "10.0.0.1", "nextHop": "192.0.2.1", ` + peer + `}`, []string{`bgp.nextHop "192.0.2.1"`}},
		{"v6 next hop in nextHopIPv4", `{"asn": 1, "routerID": "10.0.0.1", "nextHopIPv4": "2001:db8::9", ` + peer + `}`, []string{`bgp.nextHopIPv4 "2001:db8::9"`}},
		{"restart time", `{"asn": 1, "routerID": "10.0.0.1", "gracefulRestart": {"restartTime": 5000}, ` + peer + `}`, []string{"bgp.gracefulRestart.restartTime 5000"}},
		{"community", `{"asn": 1, "routerID": "10.0.0.1", "communities": ["65001:70000"], ` + peer + `}`, []string{`bgp.communities: community "65001:70000"`}},
		{"peer without asn", `{"asn": 1, "routerID": "10.0.0.1", "peers": [{"address": "2001:db8::1"}]}`, []string{"bgp.peers[0].asn"}},
		{"peer without address", `{"asn": 1, "routerID": "10.0.0.1", "peers": [{"asn": 2}]}`, []string{`bgp.peers[0].address ""`}},
		{"multicast peer", `{"asn": 1, "routerID": "10.0.0.1", "peers": [{"address": "ff02::1", "asn": 2}]}`, []string{`bgp.peers[0].address "ff02::1"`}},
		{"duplicate peer", `{"asn": 1, "routerID": "10.0.0.1", "peers": [{"address": "2001:db8::1", "asn": 2}, {"address": "2001:db8::1", "asn": 3}]}`,
			[]string{`bgp.peers[1].address "2001:db8::1": duplicate`}},
		{"hold time", `{"asn": 1, "routerID": "10.0.0.1", "peers": [{"address": "2001:db8::1", "asn": 2, "holdTime": 2}]}`, []string{"bgp.peers[0].holdTime 2"}},
		{"local address family", `{"asn": 1, "routerID": "10.0.0.1", "peers": [{"address": "2001:db8::1", "asn": 2, "localAddress": "192.0.2.1"}]}`,
			[]string{`bgp.peers[0].localAddress "192.0.2.1"`}},
		{"password too long", `{"asn": 1, "routerID": "10.0.0.1", "peers": [{"address": "2001:db8::1", "asn": 2, "password": "` + strings.Repeat("x", 81) + `"}]}`,
			[]string{"bgp.peers[0].password"}},
		{"trailing data", `{"asn": 1, "routerID": "10.0.0.1", ` + peer + `} {}`, []string{"trailing"}},
		{"several errors at once", `{"routerID": "::1", "peers": [{"address": "2001:db8::1"}]}`, []string{"bgp.asn", "bgp.routerID", "bgp.peers[0].asn"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.json))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseConfigValid(t *testing.T) {
	in := `{"asn": 4200000001, "routerID": "10.0.0.1", "listenPort": 1179,
		"nextHop": "2001:db8::2", "nextHopIPv4": "192.0.2.2",
		"families": ["ipv6-unicast", "ipv4-unicast"],
		"gracefulRestart": {"enabled": true, "restartTime": 300},
		"communities": ["65001:100", "no-export"],
		"peers": [
			{"address": "2001:db8::1", "asn": 65000, "password": "s3cret", "holdTime": 9, "multihop": 2, "localAddress": "2001:db8::2"},
			{"address": "192.0.2.1", "asn": 65000}
		]}`
	c, err := ParseConfig([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := PeerConfig{Address: netip.MustParseAddr("2001:db8::1"), ASN: 65000, Password: "s3cret", HoldTime: 9,
		Multihop: 2, LocalAddress: netip.MustParseAddr("2001:db8::2")}
	if !reflect.DeepEqual(c.Peers[0], want) {
		t.Errorf("peers[0] = %+v, want %+v", c.Peers[0], want)
	}
	// A parsed config survives a JSON round trip (ipamd re-encodes it for `ipamd config`).
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ParseConfig(b)
	if err != nil {
		t.Fatalf("round trip: %v\n%s", err, b)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Errorf("round trip changed the config:\n%+v\n%+v", c, c2)
	}
}

func TestParseCommunity(t *testing.T) {
	tests := []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"65001:100", 65001<<16 | 100, true},
		{"0:0", 0, true},
		{"65535:65535", 0xffffffff, true},
		{"NO-EXPORT", 0xFFFFFF01, true},
		{"no-advertise", 0xFFFFFF02, true},
		{"65536:1", 0, false},
		{"1:65536", 0, false},
		{"1", 0, false},
		{"a:b", 0, false},
		{"-1:1", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := parseCommunity(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseCommunity(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
