package dhcp6pd

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	fixtureClientDUID = DUID{0, 3, 0, 1, 2, 0, 0, 0, 0, 2}
	fixtureServerDUID = DUID{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}
)

func TestDecodeServerMsgFixtures(t *testing.T) {
	lease := func(p string) []Prefix {
		return []Prefix{{Prefix: netip.MustParsePrefix(p), Preferred: 300 * time.Second, Valid: 600 * time.Second}}
	}
	tests := []struct {
		file     string
		typ      dhcpv6.MessageType
		rapid    bool
		status   Status
		iaStatus Status
		prefixes []Prefix
		t1, t2   time.Duration
		noIA     bool
	}{
		{file: "kea/full/02-recv-advertise.bin", typ: dhcpv6.MessageTypeAdvertise, prefixes: lease("2001:db8:100::/64"), t1: 150 * time.Second, t2: 240 * time.Second},
		{file: "kea/full/04-recv-reply.bin", typ: dhcpv6.MessageTypeReply, prefixes: lease("2001:db8:100::/64"), t1: 150 * time.Second, t2: 240 * time.Second},
		{file: "kea/full/06-recv-reply.bin", typ: dhcpv6.MessageTypeReply, prefixes: lease("2001:db8:100::/64"), t1: 150 * time.Second, t2: 240 * time.Second},
		{file: "kea/full/08-recv-reply.bin", typ: dhcpv6.MessageTypeReply, prefixes: lease("2001:db8:100::/64"), t1: 150 * time.Second, t2: 240 * time.Second},
		{file: "kea/full/10-recv-reply.bin", typ: dhcpv6.MessageTypeReply},
		{file: "kea/rapid/02-recv-reply.bin", typ: dhcpv6.MessageTypeReply, rapid: true, prefixes: lease("2001:db8:100:1::/64"), t1: 150 * time.Second, t2: 240 * time.Second},
		{file: "kea/hint56/04-recv-reply.bin", typ: dhcpv6.MessageTypeReply, prefixes: lease("2001:db8:100:2::/64"), t1: 150 * time.Second, t2: 240 * time.Second},
		{file: "dhcpd/full/02-recv-advertise.bin", typ: dhcpv6.MessageTypeAdvertise, prefixes: lease("2001:db8:300:ffff::/64"), t1: 150 * time.Second, t2: 240 * time.Second},
		{file: "dhcpd/full/06-recv-reply.bin", typ: dhcpv6.MessageTypeReply, prefixes: lease("2001:db8:300:ffff::/64"), t1: 150 * time.Second, t2: 240 * time.Second},
		{file: "dhcpd/full/10-recv-reply.bin", typ: dhcpv6.MessageTypeReply, noIA: true},
		{file: "dhcpd/rapid/02-recv-reply.bin", typ: dhcpv6.MessageTypeReply, rapid: true, prefixes: lease("2001:db8:300:ffff::/64"), t1: 150 * time.Second, t2: 240 * time.Second},
		{file: "dhcpd/hint56/04-recv-reply.bin", typ: dhcpv6.MessageTypeReply, prefixes: lease("2001:db8:400:ff00::/56"), t1: 150 * time.Second, t2: 240 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			m, err := decodeServerMsg(readFixture(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if m.typ != tt.typ || m.rapidCommit != tt.rapid || m.status != tt.status {
				t.Errorf("type %s rapid %v status %s, want %s %v %s", m.typ, m.rapidCommit, m.status, tt.typ, tt.rapid, tt.status)
			}
			if !m.serverID.Equal(fixtureServerDUID) || !m.clientID.Equal(fixtureClientDUID) {
				t.Errorf("server %s client %s", m.serverID, m.clientID)
			}
			ia := m.ia(1)
			if tt.noIA {
				if ia != nil {
					t.Errorf("unexpected IA_PD %+v", ia)
				}
				return
			}
			if ia == nil {
				t.Fatal("no IA_PD 1")
			}
			if ia.status != tt.iaStatus || ia.t1 != tt.t1 || ia.t2 != tt.t2 {
				t.Errorf("IA status %s T1 %v T2 %v, want %s %v %v", ia.status, ia.t1, ia.t2, tt.iaStatus, tt.t1, tt.t2)
			}
			if len(ia.prefixes) != len(tt.prefixes) {
				t.Fatalf("prefixes %+v, want %+v", ia.prefixes, tt.prefixes)
			}
			for i := range ia.prefixes {
				if ia.prefixes[i] != tt.prefixes[i] {
					t.Errorf("prefix %d: %+v, want %+v", i, ia.prefixes[i], tt.prefixes[i])
				}
			}
		})
	}
}

// serverMsg builds a server message the way the fixtures' servers do, for
// the cases the fixtures lack (status codes, odd lifetimes).
type serverMsg struct {
	typ        dhcpv6.MessageType
	xid        [3]byte
	clientID   DUID
	serverID   DUID
	preference int // -1: none
	rapid      bool
	status     *Status
	ias        []serverIA
}

type serverIA struct {
	iaid     uint32
	t1, t2   uint32
	status   *Status
	prefixes []serverPrefix
}

type serverPrefix struct {
	prefix      string
	pref, valid uint32
}

func statusPtr(s Status) *Status { return &s }

func (s serverMsg) encode() []byte {
	var b []byte
	b = append(b, byte(s.typ), s.xid[0], s.xid[1], s.xid[2])
	opt := func(code uint16, data []byte) {
		b = append(b, byte(code>>8), byte(code), byte(len(data)>>8), byte(len(data)))
		b = append(b, data...)
	}
	u32 := func(dst []byte, v uint32) []byte { return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v)) }
	statusData := func(st Status) []byte { return append([]byte{byte(st >> 8), byte(st)}, "msg"...) }
	if s.clientID != nil {
		opt(1, s.clientID)
	}
	if s.serverID != nil {
		opt(2, s.serverID)
	}
	if s.preference >= 0 {
		opt(7, []byte{byte(s.preference)})
	}
	if s.rapid {
		opt(14, nil)
	}
	if s.status != nil {
		opt(13, statusData(*s.status))
	}
	for _, ia := range s.ias {
		var d []byte
		d = u32(d, ia.iaid)
		d = u32(d, ia.t1)
		d = u32(d, ia.t2)
		if ia.status != nil {
			sd := statusData(*ia.status)
			d = append(d, 0, 13, byte(len(sd)>>8), byte(len(sd)))
			d = append(d, sd...)
		}
		for _, p := range ia.prefixes {
			pp := netip.MustParsePrefix(p.prefix)
			var pd []byte
			pd = u32(pd, p.pref)
			pd = u32(pd, p.valid)
			pd = append(pd, byte(pp.Bits()))
			a := pp.Addr().As16()
			pd = append(pd, a[:]...)
			d = append(d, 0, 26, byte(len(pd)>>8), byte(len(pd)))
			d = append(d, pd...)
		}
		opt(25, d)
	}
	return b
}

func TestDecodeServerMsgEdgeCases(t *testing.T) {
	base := func() serverMsg {
		return serverMsg{typ: dhcpv6.MessageTypeReply, xid: [3]byte{1, 2, 3}, clientID: fixtureClientDUID, serverID: fixtureServerDUID, preference: -1}
	}
	t.Run("infinite lifetimes and host bits masked", func(t *testing.T) {
		s := base()
		s.ias = []serverIA{{iaid: 7, t1: 0xffffffff, t2: 0xffffffff, prefixes: []serverPrefix{{"2001:db8:1:2:3::/56", 0xffffffff, 0xffffffff}}}}
		m, err := decodeServerMsg(s.encode())
		if err != nil {
			t.Fatal(err)
		}
		ia := m.ia(7)
		want := Prefix{Prefix: netip.MustParsePrefix("2001:db8:1::/56"), Preferred: Infinity, Valid: Infinity}
		if ia == nil || ia.t1 != Infinity || ia.t2 != Infinity || len(ia.prefixes) != 1 || ia.prefixes[0] != want {
			t.Fatalf("got %+v", ia)
		}
	})
	t.Run("preferred above valid is dropped", func(t *testing.T) {
		s := base()
		s.ias = []serverIA{{iaid: 7, prefixes: []serverPrefix{{"2001:db8:1::/64", 100, 50}, {"2001:db8:2::/64", 50, 100}}}}
		m, err := decodeServerMsg(s.encode())
		if err != nil {
			t.Fatal(err)
		}
		if ia := m.ia(7); len(ia.prefixes) != 1 || ia.prefixes[0].Prefix != netip.MustParsePrefix("2001:db8:2::/64") {
			t.Fatalf("got %+v", ia)
		}
	})
	t.Run("T1 above T2 drops the IA", func(t *testing.T) {
		s := base()
		s.ias = []serverIA{{iaid: 7, t1: 100, t2: 50, prefixes: []serverPrefix{{"2001:db8:1::/64", 100, 200}}}}
		m, err := decodeServerMsg(s.encode())
		if err != nil {
			t.Fatal(err)
		}
		if m.ia(7) != nil {
			t.Fatalf("IA kept: %+v", m.ia(7))
		}
	})
	t.Run("status codes", func(t *testing.T) {
		s := base()
		s.status = statusPtr(StatusNoAddrsAvail)
		s.ias = []serverIA{{iaid: 7, status: statusPtr(StatusNoPrefixAvail)}}
		m, err := decodeServerMsg(s.encode())
		if err != nil {
			t.Fatal(err)
		}
		if m.status != StatusNoAddrsAvail || m.ia(7).status != StatusNoPrefixAvail {
			t.Fatalf("status %s IA status %s", m.status, m.ia(7).status)
		}
	})
	t.Run("preference", func(t *testing.T) {
		s := base()
		s.typ = dhcpv6.MessageTypeAdvertise
		s.preference = 255
		m, err := decodeServerMsg(s.encode())
		if err != nil || m.preference != 255 {
			t.Fatalf("preference %v err %v", m, err)
		}
	})
	for name, s := range map[string]serverMsg{
		"no server ID": {typ: dhcpv6.MessageTypeReply, clientID: fixtureClientDUID, preference: -1},
		"no client ID": {typ: dhcpv6.MessageTypeReply, serverID: fixtureServerDUID, preference: -1},
		"a Solicit":    {typ: dhcpv6.MessageTypeSolicit, clientID: fixtureClientDUID, serverID: fixtureServerDUID, preference: -1},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeServerMsg(s.encode()); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestEncodeMatchesFixtures(t *testing.T) {
	// The fixtures were sent by a client built on the same library: our
	// encoder must produce the same options for the same inputs, apart from
	// the ORO we ask for.
	tests := []struct {
		file string
		msg  outMsg
	}{
		{"kea/full/09-sent-release.bin", outMsg{typ: dhcpv6.MessageTypeRelease, serverID: fixtureServerDUID, hints: []netip.Prefix{netip.MustParsePrefix("2001:db8:100::/64")}}},
		{"dhcpd/hint56/05-sent-release.bin", outMsg{typ: dhcpv6.MessageTypeRelease, serverID: fixtureServerDUID, hints: []netip.Prefix{netip.MustParsePrefix("2001:db8:400:ff00::/56")}}},
	}
	for _, tt := range tests {
		want := readFixture(t, tt.file)
		tt.msg.clientID = fixtureClientDUID
		tt.msg.iaid = 1
		copy(tt.msg.xid[:], want[1:4])
		if got := tt.msg.encode(); !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %x\nwant %x", tt.file, got, want)
		}
	}
}

func TestEncodeOptions(t *testing.T) {
	hint := []netip.Prefix{netip.MustParsePrefix("::/56")}
	for _, tt := range []struct {
		typ             dhcpv6.MessageType
		serverID, rapid bool
	}{
		{dhcpv6.MessageTypeSolicit, false, true},
		{dhcpv6.MessageTypeRequest, true, false},
		{dhcpv6.MessageTypeRenew, true, false},
		{dhcpv6.MessageTypeRebind, false, false},
		{dhcpv6.MessageTypeRelease, true, false},
	} {
		t.Run(tt.typ.String(), func(t *testing.T) {
			b := outMsg{typ: tt.typ, xid: [3]byte{9, 8, 7}, clientID: fixtureClientDUID, serverID: fixtureServerDUID,
				elapsed: 1234 * time.Millisecond, iaid: 0xdeadbeef, hints: hint, rapidCommit: true}.encode()
			m, err := dhcpv6.MessageFromBytes(b)
			if err != nil {
				t.Fatal(err)
			}
			if m.MessageType != tt.typ || m.TransactionID != [3]byte{9, 8, 7} {
				t.Errorf("header %s %v", m.MessageType, m.TransactionID)
			}
			if (m.GetOneOption(dhcpv6.OptionServerID) != nil) != tt.serverID {
				t.Errorf("server ID present: %v", !tt.serverID)
			}
			if (m.GetOneOption(dhcpv6.OptionRapidCommit) != nil) != tt.rapid {
				t.Errorf("rapid commit present: %v", !tt.rapid)
			}
			if got := m.Options.ElapsedTime(); got != 1230*time.Millisecond {
				t.Errorf("elapsed %v", got)
			}
			ia := m.Options.OneIAPD()
			if ia == nil || ia.IaId != [4]byte{0xde, 0xad, 0xbe, 0xef} || len(ia.Options.Prefixes()) != 1 {
				t.Fatalf("IA_PD %v", ia)
			}
			if ones, _ := ia.Options.Prefixes()[0].Prefix.Mask.Size(); ones != 56 {
				t.Errorf("hint length %d", ones)
			}
		})
	}
}

func TestElapsedCapped(t *testing.T) {
	if got := elapsedBytes(20 * time.Minute); !bytes.Equal(got, []byte{0xff, 0xff}) {
		t.Errorf("got %x", got)
	}
}
