package link

import (
	"strings"
	"testing"
)

func TestHostVethName(t *testing.T) {
	a := HostVethName("0123456789abcdef", "eth0")
	if a != HostVethName("0123456789abcdef", "eth0") {
		t.Fatal("HostVethName is not deterministic")
	}
	if len(a) != 15 || !strings.HasPrefix(a, hostVethPrefix) {
		t.Fatalf("HostVethName = %q, want 15 bytes starting with %q", a, hostVethPrefix)
	}
	if a == HostVethName("0123456789abcdef", "eth1") || a == HostVethName("0123456789abcdeF", "eth0") {
		t.Fatal("HostVethName ignores part of its input")
	}
}

func TestMACsLocallyAdministeredUnicast(t *testing.T) {
	macs := map[string]func() []byte{
		"ContainerMAC": func() []byte { return ContainerMAC("net", "cid", "eth0") },
		"HostVethMAC":  func() []byte { return HostVethMAC("cid", "eth0") },
		"bridgeMAC":    func() []byte { return bridgeMAC("v6cni0") },
	}
	for name, f := range macs {
		mac := f()
		if len(mac) != 6 {
			t.Errorf("%s = %x, want 6 bytes", name, mac)
		}
		if mac[0]&0x02 == 0 {
			t.Errorf("%s = %x is not locally administered", name, mac)
		}
		if mac[0]&0x01 != 0 {
			t.Errorf("%s = %x is multicast", name, mac)
		}
		if string(f()) != string(mac) {
			t.Errorf("%s is not deterministic", name)
		}
	}
	// Many inputs: the bits must hold whatever the hash gives.
	seen := map[string]bool{}
	for i := range 1000 {
		mac := ContainerMAC("net", string(rune('a'+i%26))+strings.Repeat("x", i), "eth0")
		if mac[0]&0x03 != 0x02 {
			t.Fatalf("ContainerMAC #%d = %s is not locally administered unicast", i, mac)
		}
		seen[mac.String()] = true
	}
	if len(seen) != 1000 {
		t.Fatalf("%d distinct MACs from 1000 inputs", len(seen))
	}
	if ContainerMAC("a", "cid", "eth0").String() == ContainerMAC("b", "cid", "eth0").String() {
		t.Fatal("ContainerMAC ignores the network name")
	}
}

func TestVLANIfName(t *testing.T) {
	if got := VLANIfName("v6cni0", 100); got != "v6cni0.100" {
		t.Errorf("VLANIfName(v6cni0, 100) = %q, want v6cni0.100", got)
	}
	if got := VLANIfName("abcdefghij", 4094); got != "abcdefghij.4094" {
		t.Errorf("VLANIfName of a 15-byte result = %q, want it unchanged", got)
	}
	long := VLANIfName("abcdefghijk", 4094) // 16 bytes as <bridge>.<vid>
	if len(long) > 15 || !strings.HasPrefix(long, "v6v") || !strings.HasSuffix(long, ".4094") {
		t.Errorf("VLANIfName of a long bridge = %q, want ≤ 15 bytes, v6v….4094", long)
	}
	if long != VLANIfName("abcdefghijk", 4094) {
		t.Error("VLANIfName is not deterministic")
	}
	if long == VLANIfName("abcdefghijl", 4094) || long == VLANIfName("abcdefghijk", 4093) {
		t.Error("VLANIfName ignores part of its input")
	}
	if n := VLANIfName("abcdefghijklmno", 4094); len(n) > 15 {
		t.Errorf("VLANIfName of a 15-byte bridge = %q, longer than 15 bytes", n)
	}
}
