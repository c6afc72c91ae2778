package dhcp6pd

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"strings"
)

// DUID is a DHCP Unique Identifier (RFC 8415 §11) in wire form. Its text form
// is colon-separated hex ("00:03:00:01:02:00:00:00:00:02"), as in dhcpd's and
// Kea's configuration and logs.
type DUID []byte

func (d DUID) String() string {
	var b strings.Builder
	for i, c := range d {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02x", c)
	}
	return b.String()
}

// MarshalText implements encoding.TextMarshaler.
func (d DUID) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; it accepts hex with or
// without ':' separators.
func (d *DUID) UnmarshalText(text []byte) error {
	b, err := ParseDUID(string(text))
	if err != nil {
		return err
	}
	*d = b
	return nil
}

// Equal reports whether d and e are the same DUID.
func (d DUID) Equal(e DUID) bool { return string(d) == string(e) }

// ParseDUID parses the text form of a DUID. The empty string is a nil DUID.
func ParseDUID(s string) (DUID, error) {
	h := strings.ReplaceAll(s, ":", "")
	b, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("invalid DUID %q: %v", s, err)
	}
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) < 3 || len(b) > 130 { // type + at least one byte; at most 128 bytes after the type
		return nil, fmt.Errorf("invalid DUID %q: length %d", s, len(b))
	}
	return DUID(b), nil
}

// DUIDLL returns the DUID-LL (type 3) of an Ethernet MAC address
// (hardware type 1).
func DUIDLL(mac net.HardwareAddr) DUID {
	d := binary.BigEndian.AppendUint16(nil, 3)
	d = binary.BigEndian.AppendUint16(d, 1)
	return append(d, mac...)
}

// DUIDUUID returns the DUID-UUID (type 4, RFC 6355) of a 16-byte UUID.
func DUIDUUID(uuid [16]byte) DUID {
	d := binary.BigEndian.AppendUint16(nil, 4)
	return append(d, uuid[:]...)
}

// DUIDFromMachineID returns the DUID-UUID of the machine ID in path
// (normally /etc/machine-id: 32 hex digits). It is stable across reboots and
// independent of the network hardware.
func DUIDFromMachineID(path string) (DUID, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read machine id: %w", err)
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != 16 {
		return nil, fmt.Errorf("machine id in %s is not 32 hex digits", path)
	}
	return DUIDUUID([16]byte(raw)), nil
}

// IAIDFromName derives a stable IAID from an interface name (FNV-1a), so the
// same uplink keeps its IAID across restarts without storing it.
func IAIDFromName(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32()
}
