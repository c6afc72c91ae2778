package dhcp6pd

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestDUIDs(t *testing.T) {
	mac, _ := net.ParseMAC("02:00:00:00:00:02")
	if got := DUIDLL(mac); !got.Equal(fixtureClientDUID) {
		t.Errorf("DUIDLL = %s", got)
	}
	path := filepath.Join(t.TempDir(), "machine-id")
	os.WriteFile(path, []byte("0123456789abcdef0123456789abcdef\n"), 0o644)
	d, err := DUIDFromMachineID(path)
	if err != nil || d.String() != "00:04:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef" {
		t.Errorf("DUIDFromMachineID = %s, %v", d, err)
	}
	os.WriteFile(path, []byte("nope\n"), 0o644)
	if _, err := DUIDFromMachineID(path); err == nil {
		t.Error("accepted a bad machine id")
	}
	p, err := ParseDUID(d.String())
	if err != nil || !p.Equal(d) {
		t.Errorf("ParseDUID round trip: %s %v", p, err)
	}
	if _, err := ParseDUID("zz"); err == nil {
		t.Error("ParseDUID accepted zz")
	}
	// Pinned: the IAID is stored with the binding in etcd, so a change of
	// the rule would make every restarted ipamd look like a new client.
	if got := IAIDFromName("eth0"); got != 0x67b19724 {
		t.Errorf("IAIDFromName(eth0) = %#08x, want 0x67b19724 (the rule changed)", got)
	}
	if IAIDFromName("eth0") == IAIDFromName("eth1") {
		t.Error("IAIDFromName not distinct for eth0 and eth1")
	}
}
