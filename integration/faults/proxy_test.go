package faults

import (
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// linkProxy is a TCP relay between ipamd and one etcd member that behaves
// like a bad link. tc netem is the first choice for that, but this
// machine's kernel has no sch_netem ("Specified qdisc kind is unknown", and
// no modules to load), so the relay does it in user space: every chunk of
// bytes either way passes the gate, which delays it, stalls it as a lost
// segment's retransmission would, or holds it for as long as the link is
// partitioned. Bytes are never reordered or dropped from a stream (TCP does
// not lose bytes, it delays them): the effects are those of a real link.
type linkProxy struct {
	ln     net.Listener
	target string

	mu        sync.Mutex
	cond      *sync.Cond
	delay     time.Duration // one way, per chunk
	loss      float64       // chance a chunk is "lost" and waits a retransmission
	partition bool
	chunks    int
	stalls    int
}

func startLinkProxy(t *testing.T, target string) *linkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	var conns sync.WaitGroup
	var open []net.Conn
	var openMu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			openMu.Lock()
			open = append(open, c, up)
			openMu.Unlock()
			conns.Add(2)
			go func() { defer conns.Done(); p.pump(up, c) }()
			go func() { defer conns.Done(); p.pump(c, up) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.set(0, 0, false)
		openMu.Lock()
		for _, c := range open {
			c.Close()
		}
		openMu.Unlock()
		conns.Wait()
	})
	return p
}

// URL is the client URL ipamd is given instead of the member's.
func (p *linkProxy) URL() string { return "http://" + p.ln.Addr().String() }

// set changes the link: one-way delay, loss chance, partition.
func (p *linkProxy) set(delay time.Duration, loss float64, partition bool) {
	p.mu.Lock()
	p.delay, p.loss, p.partition = delay, loss, partition
	p.cond.Broadcast()
	p.mu.Unlock()
}

// retransmit is what a lost segment costs: Linux's minimum RTO.
const retransmit = 200 * time.Millisecond

func (p *linkProxy) gate() {
	p.mu.Lock()
	for p.partition {
		p.cond.Wait()
	}
	d := p.delay
	p.chunks++
	if p.loss > 0 && rand.Float64() < p.loss {
		d += retransmit
		p.stalls++
	}
	p.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
}

func (p *linkProxy) pump(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}
