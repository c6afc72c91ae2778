package dhcp6pd

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecodeReply feeds arbitrary bytes to the decoder of server messages:
// it must never panic, and what it accepts must be what a client may use.
func FuzzDecodeReply(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*/*-recv-*.bin")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{7, 1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeServerMsg(data)
		if err != nil {
			if m != nil {
				t.Fatal("message with an error")
			}
			return
		}
		if len(m.serverID) == 0 || len(m.clientID) == 0 {
			t.Fatal("accepted without IDs")
		}
		for _, ia := range m.ias {
			if ia.t1 > 0 && ia.t2 > 0 && ia.t1 > ia.t2 {
				t.Fatalf("T1 %v > T2 %v", ia.t1, ia.t2)
			}
			for _, p := range ia.prefixes {
				if !p.Prefix.IsValid() || p.Prefix != p.Prefix.Masked() || !p.Prefix.Addr().Is6() || p.Prefix.Bits() == 0 {
					t.Fatalf("bad prefix %v", p.Prefix)
				}
				if p.Preferred > p.Valid || p.Valid < 0 || p.Preferred < 0 {
					t.Fatalf("bad lifetimes %+v", p)
				}
			}
		}
		// Feeding an accepted message to a machine must not panic either.
		mc := newTestMachine(t)
		mc.start(testEpoch, Binding{})
		mc.timer(testEpoch.Add(2 * solMaxDelay))
		mc.packet(testEpoch.Add(2*solMaxDelay), data, testServer)
	})
}
