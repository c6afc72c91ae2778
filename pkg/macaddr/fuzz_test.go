package macaddr

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzForAttachment: any stdin and CNI_ARGS give either a usable MAC (6
// bytes, unicast, not zero) or a *types.Error; never a panic.
func FuzzForAttachment(f *testing.F) {
	f.Add([]byte(`{"runtimeConfig":{"mac":"02:00:00:00:00:01"}}`), "")
	f.Add([]byte(`{"args":{"cni":{"mac":"ff:ff:ff:ff:ff:ff"}}}`), "")
	f.Add([]byte(`{}`), "IgnoreUnknown=1;MAC=0a:bb:cc:dd:ee:ff")
	f.Add([]byte(`nope`), "MAC=;MAC")
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		mac, err := ForAttachment(stdin, cniArgs, "net", "cid", "eth0")
		if err != nil {
			var cniErr *types.Error
			if !errors.As(err, &cniErr) || (cniErr.Code != types.ErrInvalidNetworkConfig && cniErr.Code != types.ErrDecodingFailure) {
				t.Fatalf("err = %v (%T), want a *types.Error with code 6 or 7", err, err)
			}
			return
		}
		if len(mac) != 6 || mac[0]&0x01 != 0 || bytes.Equal(mac, make([]byte, 6)) {
			t.Fatalf("ForAttachment returned unusable MAC %s", mac)
		}
	})
}

// FuzzEUI64: the MAC can be read back from the interface ID, and the
// address stays in the prefix.
func FuzzEUI64(f *testing.F) {
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0}, uint8(64), []byte{0xfa, 0x16, 0x3e, 0x79, 0x5a, 0xcc})
	f.Fuzz(func(t *testing.T, pfx []byte, bits uint8, mac []byte) {
		var a [16]byte
		copy(a[:], pfx)
		prefix := netip.PrefixFrom(netip.AddrFrom16(a), int(bits)%129)
		got := EUI64(prefix, net.HardwareAddr(mac))
		if prefix.Bits() > 64 || len(mac) != 6 || prefix.Addr().Is4In6() {
			if got.IsValid() {
				t.Fatalf("EUI64(%s, %x) = %s, want invalid", prefix, mac, got)
			}
			return
		}
		if !prefix.Contains(got) {
			t.Fatalf("EUI64(%s, %x) = %s is outside the prefix", prefix, mac, got)
		}
		b := got.As16()
		if b[11] != 0xff || b[12] != 0xfe {
			t.Fatalf("EUI64(%s, %x) = %s lacks ff:fe", prefix, mac, got)
		}
		back := []byte{b[8] ^ 0x02, b[9], b[10], b[13], b[14], b[15]}
		if !bytes.Equal(back, mac) {
			t.Fatalf("EUI64(%s, %x) = %s: MAC read back %x", prefix, mac, got, back)
		}
	})
}
