package upstream

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// PingStats is what a Pinger saw.
type PingStats struct {
	// Sent and Received count echo requests and their replies; Lost is
	// Sent - Received (requests still in flight at Stop count as lost
	// only if Stop's grace period passed without their reply).
	Sent, Received, Lost int
	// Outage is the longest time between two consecutive replies with
	// at least one request lost in between (0 without loss); Outages is
	// the number of such runs of lost requests.
	Outage  time.Duration
	Outages int
	// Recovered reports that the last request sent was answered: any
	// outage ended.
	Recovered bool
}

func (s PingStats) String() string {
	return fmt.Sprintf("sent=%d received=%d lost=%d outage=%s outages=%d recovered=%t",
		s.Sent, s.Received, s.Lost, s.Outage.Round(time.Millisecond), s.Outages, s.Recovered)
}

// Pinger sends ICMPv6 echo requests from a netns at a fixed interval
// and records the replies (its own loop on a raw socket opened in the
// netns: no ping binary, so it also runs in a vmtest guest).
type Pinger struct {
	conn     *icmp.PacketConn
	dst      netip.Addr
	interval time.Duration
	id       int
	stop     chan struct{}
	wg       sync.WaitGroup
	// stopOnce makes Stop idempotent; stopped is its result.
	stopOnce sync.Once
	stopped  PingStats

	mu      sync.Mutex
	sentAt  []time.Time // by seq
	replyAt map[int]time.Time
	err     error
}

// StartPinger pings dst from the netns nsName (a name or a path) every
// interval until Stop.
func StartPinger(nsName string, dst netip.Addr, interval time.Duration) (*Pinger, error) {
	netns, err := ns.GetNS(NetnsPath(nsName))
	if err != nil {
		return nil, fmt.Errorf("pinger: %w", err)
	}
	defer netns.Close()
	p := &Pinger{dst: dst, interval: interval, stop: make(chan struct{}), replyAt: map[int]time.Time{}}
	// The socket belongs to the netns it is opened in.
	if err := netns.Do(func(ns.NetNS) error {
		var err error
		p.conn, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
		return err
	}); err != nil {
		return nil, fmt.Errorf("pinger in %s: %w", nsName, err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeEchoReply)
	_ = p.conn.IPv6PacketConn().SetICMPFilter(&f)
	var b [2]byte
	_, _ = rand.Read(b[:])
	p.id = int(binary.BigEndian.Uint16(b[:]))
	p.wg.Add(2)
	go p.receive()
	go p.send()
	return p, nil
}

func (p *Pinger) send() {
	defer p.wg.Done()
	t := time.NewTicker(p.interval)
	defer t.Stop()
	dst := &net.IPAddr{IP: net.IP(p.dst.AsSlice()), Zone: p.dst.Zone()}
	for {
		p.mu.Lock()
		seq := len(p.sentAt)
		p.sentAt = append(p.sentAt, time.Now())
		p.mu.Unlock()
		m := icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: p.id, Seq: seq & 0xffff, Data: []byte("upstream")}}
		b, _ := m.Marshal(nil)
		// Errors (no route during a failover) are losses like any other.
		_, _ = p.conn.WriteTo(b, dst)
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

func (p *Pinger) receive() {
	defer p.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, _, err := p.conn.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
			}
			return
		}
		now := time.Now()
		m, err := icmp.ParseMessage(58, buf[:n])
		if err != nil || m.Type != ipv6.ICMPTypeEchoReply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || e.ID != p.id {
			continue
		}
		p.mu.Lock()
		// Sequence numbers wrap at 65536: take the latest sent one with
		// these low bits.
		seq := e.Seq
		for seq+0x10000 < len(p.sentAt) {
			seq += 0x10000
		}
		if seq < len(p.sentAt) {
			if _, dup := p.replyAt[seq]; !dup {
				p.replyAt[seq] = now
			}
		}
		p.mu.Unlock()
	}
}

// Steady reports that the pings have been answered without a loss for
// at least d, all of it after since: every request sent in the window
// that ends one reply-grace (3 intervals, at least 200 ms) ago and spans
// d was answered. A failover test waits for it rather than for the first
// reply, which may be followed by a second outage (a flapping path).
func (p *Pinger) Steady(since time.Time, d time.Duration) bool {
	grace := max(200*time.Millisecond, 3*p.interval)
	end := time.Now().Add(-grace)
	start := end.Add(-d)
	if start.Before(since) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for seq, at := range p.sentAt {
		if at.Before(start) || at.After(end) {
			continue
		}
		if _, ok := p.replyAt[seq]; !ok {
			return false
		}
		n++
	}
	return n > 0
}

// LastReply is when the latest reply came (zero before any).
func (p *Pinger) LastReply() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, at := range p.replyAt {
		if at.After(last) {
			last = at
		}
	}
	return last
}

// Stop stops sending, waits up to a second (or 3 intervals) for the
// replies in flight and returns the statistics. It may be called more
// than once (a deferred Stop after an explicit one): later calls return
// the first call's statistics.
func (p *Pinger) Stop() PingStats {
	p.stopOnce.Do(func() { p.stopped = p.stop1() })
	return p.stopped
}

func (p *Pinger) stop1() PingStats {
	close(p.stop)
	grace := max(time.Second, 3*p.interval)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		_, last := p.replyAt[len(p.sentAt)-1]
		p.mu.Unlock()
		if last {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.conn.Close()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return stats(len(p.sentAt), p.replyAt)
}

// stats computes PingStats from sent requests 0..sent-1 and the reply
// times by sequence number.
func stats(sent int, replyAt map[int]time.Time) PingStats {
	s := PingStats{Sent: sent, Received: len(replyAt)}
	s.Lost = s.Sent - s.Received
	prev := -1
	for seq := range sent {
		at, ok := replyAt[seq]
		if !ok {
			continue
		}
		if prev >= 0 && seq-prev > 1 {
			s.Outages++
			if gap := at.Sub(replyAt[prev]); gap > s.Outage {
				s.Outage = gap
			}
		}
		prev = seq
	}
	if prev >= 0 && prev < sent-1 {
		// Lost at the end: never recovered; the outage runs until the
		// last request.
		s.Outages++
	}
	_, s.Recovered = replyAt[sent-1]
	return s
}
