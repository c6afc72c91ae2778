// Package ipmath is the address arithmetic of v6cni's pools and blocks, on
// net/netip values: no allocation, no net.IP byte slices. IPv4 and IPv6 are
// handled alike; IPv6 prefixes up to /0 never overflow a uint64 offset (the
// Whereabouts bug) because everything here works on the full 128 bits.
package ipmath

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
)

// Last is the highest address of p.
func Last(p netip.Prefix) netip.Addr {
	p = p.Masked()
	if p.Addr().Is4() {
		b := p.Addr().As4()
		v := binary.BigEndian.Uint32(b[:])
		v |= uint32(uint64(1)<<(32-p.Bits()) - 1)
		binary.BigEndian.PutUint32(b[:], v)
		return netip.AddrFrom4(b)
	}
	b := p.Addr().As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	hostBits := 128 - p.Bits()
	switch {
	case hostBits >= 64:
		lo = ^uint64(0)
		hi |= mask64(hostBits - 64)
	default:
		lo |= mask64(hostBits)
	}
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}

// mask64 has the n low bits set (n in 0..64).
func mask64(n int) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return uint64(1)<<n - 1
}

// NextBlock is the block of the same size right after b, and false when b is
// the last block of the address space or of within.
func NextBlock(b, within netip.Prefix) (netip.Prefix, bool) {
	next := Last(b).Next()
	if !next.IsValid() || !within.Contains(next) {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(next, b.Bits()), true
}

// FirstBlock is the first block of size bits in subnet.
func FirstBlock(subnet netip.Prefix, bits int) netip.Prefix {
	return netip.PrefixFrom(subnet.Masked().Addr(), bits)
}

// Gateway is the address of the block that the bridge carries: the first
// host address (…::1, x.y.z.1). The all-zero address is left alone (IPv6
// Subnet-Router anycast, IPv4 network address).
func Gateway(block netip.Prefix) netip.Addr {
	return block.Masked().Addr().Next()
}

// FirstHost is the first address of the block a container may get.
func FirstHost(block netip.Prefix) netip.Addr {
	return Gateway(block).Next()
}

// LastHost is the last address of the block a container may get (the IPv4
// broadcast address is kept out).
func LastHost(block netip.Prefix) netip.Addr {
	last := Last(block)
	if last.Is4() {
		return last.Prev()
	}
	return last
}

// IsHost reports whether a is an address of block a container may get.
func IsHost(block netip.Prefix, a netip.Addr) bool {
	return block.Contains(a) && FirstHost(block).Compare(a) <= 0 && a.Compare(LastHost(block)) <= 0
}

// Stable is an address of block whose host part is a hash of key (RFC 7217
// style): the same key always lands on the same address of the block.
func Stable(block netip.Prefix, key string) netip.Addr {
	sum := sha256.Sum256([]byte(key))
	block = block.Masked()
	if block.Addr().Is4() {
		b := block.Addr().As4()
		hostBits := 32 - block.Bits()
		v := binary.BigEndian.Uint32(b[:]) | binary.BigEndian.Uint32(sum[:4])&uint32(mask64(hostBits))
		binary.BigEndian.PutUint32(b[:], v)
		return netip.AddrFrom4(b)
	}
	b := block.Addr().As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	hh, hl := binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:16])
	hostBits := 128 - block.Bits()
	if hostBits >= 64 {
		lo |= hl
		hi |= hh & mask64(hostBits-64)
	} else {
		lo |= hl & mask64(hostBits)
	}
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}

// Subnet is the n-th subnet of length bits inside p (the subnet ID of RFC
// 4291 §2.5.4: the bits between p's length and bits set to n), and false
// when n does not fit.
func Subnet(p netip.Prefix, bits int, n uint64) (netip.Prefix, bool) {
	p = p.Masked()
	width := bits - p.Bits()
	if width < 0 || bits > p.Addr().BitLen() || (width < 64 && n >= uint64(1)<<width) {
		return netip.Prefix{}, false
	}
	if p.Addr().Is4() {
		b := p.Addr().As4()
		v := binary.BigEndian.Uint32(b[:]) | uint32(n)<<(32-bits)
		binary.BigEndian.PutUint32(b[:], v)
		return netip.PrefixFrom(netip.AddrFrom4(b), bits), true
	}
	b := p.Addr().As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	shift := 128 - bits
	switch {
	case shift >= 64:
		hi |= n << (shift - 64)
	case shift == 0:
		lo |= n
	default:
		lo |= n << shift
		hi |= n >> (64 - shift)
	}
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.PrefixFrom(netip.AddrFrom16(b), bits), true
}
