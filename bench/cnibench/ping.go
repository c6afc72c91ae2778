package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/v6cni/v6cni/bench/internal/benchutil"
)

// pingResult is how long after ADD returned the container first got an
// echo reply from its IPv6 gateway.
type pingResult struct {
	first time.Duration // ADD return → first reply
	seq   int           // which probe got it (1 = the very first)
	add   time.Duration
}

// pingTrial attaches one container to a brand-new bridge and pings its IPv6
// gateway from the container: one echo request every millisecond from the
// moment ADD returns, until a reply (or timeout).
func pingTrial(ctx context.Context, r *benchutil.Run, d *execDriver, tag string, timeout time.Duration) (*pingResult, error) {
	p, err := namespaces.create(r.Name("-" + tag))
	if err != nil {
		return nil, err
	}
	defer namespaces.remove(p)
	c := newContainer(tag, p)
	// The raw socket is opened in the container before ADD (it needs no
	// interface), so nothing but the probes runs after ADD returns.
	var conn net.PacketConn
	if err := ns.WithNetNSPath(p, func(ns.NetNS) error {
		var err error
		conn, err = net.ListenPacket("ip6:ipv6-icmp", "::")
		return err
	}); err != nil {
		return nil, fmt.Errorf("icmpv6 socket in %s: %w", p, err)
	}
	defer conn.Close()
	addT, err := d.add(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("%s ADD: %w", tag, err)
	}
	t0 := time.Now()
	defer d.del(context.WithoutCancel(ctx), c)
	gw, err := gateway6(c.result)
	if err != nil {
		return nil, err
	}
	first, seq, err := ping(ctx, conn, gw, t0, timeout)
	if err != nil {
		return nil, fmt.Errorf("%s: ping6 %s: %w", tag, gw, err)
	}
	return &pingResult{first: first, seq: seq, add: addT}, nil
}

// gateway6 is the IPv6 gateway of a CNI result: ips[].gateway, else the
// first address of the address's prefix (both stacks use that).
func gateway6(result []byte) (netip.Addr, error) {
	var res struct {
		IPs []struct {
			Address string `json:"address"`
			Gateway string `json:"gateway"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(result, &res); err != nil {
		return netip.Addr{}, fmt.Errorf("decode result: %w", err)
	}
	for _, ip := range res.IPs {
		pfx, err := netip.ParsePrefix(ip.Address)
		if err != nil || !pfx.Addr().Is6() {
			continue
		}
		if gw, err := netip.ParseAddr(ip.Gateway); err == nil {
			return gw, nil
		}
		return pfx.Masked().Addr().Next(), nil
	}
	return netip.Addr{}, fmt.Errorf("no IPv6 address in result %s", result)
}

func ping(ctx context.Context, conn net.PacketConn, gw netip.Addr, t0 time.Time, timeout time.Duration) (time.Duration, int, error) {
	var idb [2]byte
	rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	type reply struct {
		seq int
		at  time.Duration
	}
	got := make(chan reply, 1)
	go func() {
		buf := make([]byte, 1500)
		conn.SetReadDeadline(t0.Add(timeout))
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				close(got)
				return
			}
			// Echo reply (129) with our identifier.
			if n >= 8 && buf[0] == 129 && binary.BigEndian.Uint16(buf[4:6]) == id {
				got <- reply{seq: int(binary.BigEndian.Uint16(buf[6:8])), at: time.Since(t0)}
				return
			}
		}
	}()
	dst := &net.IPAddr{IP: gw.AsSlice()}
	msg := make([]byte, 16)
	msg[0] = 128 // echo request; the kernel fills the ICMPv6 checksum
	binary.BigEndian.PutUint16(msg[4:6], id)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for seq := 1; ; seq++ {
		binary.BigEndian.PutUint16(msg[6:8], uint16(seq))
		conn.WriteTo(msg, dst) // errors (no route yet, tentative source) count as lost probes
		select {
		case r, ok := <-got:
			if !ok {
				return 0, 0, fmt.Errorf("no reply within %v (%d probes)", timeout, seq)
			}
			return r.at, r.seq, nil
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-tick.C:
		}
	}
}
