package link

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
)

// operUpPair is a veth pair whose host end is up and whose peer is down:
// the host end is operationally up only once the peer comes up, as the
// host end of an attachment once the container end does.
type operUpPair struct {
	host, peer netlink.Link
}

// newOperUpPair creates an operUpPair in the calling thread's namespace.
func newOperUpPair(prefix string) (operUpPair, error) {
	host := prefix + "h"
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, TxQLen: -1}, PeerName: prefix + "p"}
	if err := netlink.LinkAdd(v); err != nil {
		return operUpPair{}, fmt.Errorf("add veth %s: %w", host, err)
	}
	h, err := netlink.LinkByName(host)
	if err != nil {
		return operUpPair{}, err
	}
	p, err := netlink.LinkByName(prefix + "p")
	if err != nil {
		return operUpPair{}, err
	}
	if err := netlink.LinkSetUp(h); err != nil {
		return operUpPair{}, fmt.Errorf("set %s up: %w", host, err)
	}
	return operUpPair{host: h, peer: p}, nil
}

// waitOperState polls until the link index is operationally up (or, with
// up false, no longer up): the kernel's linkwatch sets it after the flags.
func waitOperState(index int, up bool) error {
	deadline := time.Now().Add(3 * time.Second)
	for {
		l, err := netlink.LinkByIndex(index)
		if err != nil {
			return err
		}
		if (l.Attrs().OperState == netlink.OperUp) == up {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("link %d: operstate %s, want up=%t", index, l.Attrs().OperState, up)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// addUnrelatedLinks creates n/2 veth pairs, up: n links, each with its own
// RTM_NEWLINK events, none the awaited link.
func addUnrelatedLinks(n int) ([]netlink.Link, error) {
	var links []netlink.Link
	for i := 0; i < n/2; i++ {
		name := fmt.Sprintf("opu%d", i)
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, TxQLen: -1}, PeerName: name + "p"}
		if err := netlink.LinkAdd(v); err != nil {
			return nil, fmt.Errorf("add veth %s: %w", name, err)
		}
		for _, name := range []string{name, name + "p"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return nil, err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return nil, err
			}
			links = append(links, l)
		}
	}
	return links, nil
}

// socketDrops returns how many datagrams the kernel dropped for want of
// room in the receive queue of fd (SO_MEMINFO).
func socketDrops(fd int) (uint32, error) {
	var mem [unix.SK_MEMINFO_VARS]uint32
	size := uint32(unsafe.Sizeof(mem))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		return 0, fmt.Errorf("getsockopt SO_MEMINFO: %w", errno)
	}
	return mem[unix.SK_MEMINFO_DROPS], nil
}

func setPeerUp(p operUpPair) error {
	if err := netlink.LinkSetUp(p.peer); err != nil {
		return fmt.Errorf("set %s up: %w", p.peer.Attrs().Name, err)
	}
	return nil
}

func TestOperUpWatch(t *testing.T) {
	tests := []struct {
		name string
		// beforeWatch and afterWatch, when set, run before WatchOperUp
		// and between it and Wait.
		beforeWatch func(p operUpPair) error
		afterWatch  func(w *OperUpWatch, p operUpPair) error
		// index is the link waited for, the host end when nil.
		index   func(p operUpPair) int
		timeout time.Duration
		wantErr bool
	}{
		{
			name:       "comes up after the watch",
			afterWatch: func(_ *OperUpWatch, p operUpPair) error { return setPeerUp(p) },
			timeout:    5 * time.Second,
		},
		{
			name: "up before the watch",
			beforeWatch: func(p operUpPair) error {
				if err := setPeerUp(p); err != nil {
					return err
				}
				return waitOperState(p.host.Attrs().Index, true)
			},
			timeout: 5 * time.Second,
		},
		{
			name: "up between watch and wait",
			afterWatch: func(_ *OperUpWatch, p operUpPair) error {
				if err := setPeerUp(p); err != nil {
					return err
				}
				return waitOperState(p.host.Attrs().Index, true)
			},
			timeout: 5 * time.Second,
		},
		{
			name:    "never up",
			timeout: 200 * time.Millisecond,
			wantErr: true,
		},
		{
			name: "after 50 unrelated links",
			afterWatch: func(_ *OperUpWatch, p operUpPair) error {
				if _, err := addUnrelatedLinks(50); err != nil {
					return err
				}
				return setPeerUp(p)
			},
			timeout: 5 * time.Second,
		},
		{
			// The receive queue is full before Wait: the event of the
			// link and the answer to Wait's first RTM_GETLINK are dropped.
			name: "socket overrun",
			afterWatch: func(w *OperUpWatch, p operUpPair) error {
				// The kernel raises it to its minimum, a few KiB.
				if err := unix.SetsockoptInt(w.c.Fd(), unix.SOL_SOCKET, unix.SO_RCVBUF, 0); err != nil {
					return err
				}
				if _, err := addUnrelatedLinks(50); err != nil {
					return err
				}
				if err := setPeerUp(p); err != nil {
					return err
				}
				if err := waitOperState(p.host.Attrs().Index, true); err != nil {
					return err
				}
				drops, err := socketDrops(w.c.Fd())
				if err != nil {
					return err
				}
				if drops == 0 {
					return fmt.Errorf("no event dropped: the overrun was not provoked")
				}
				return nil
			},
			timeout: 5 * time.Second,
		},
		{
			name:       "removed",
			afterWatch: func(_ *OperUpWatch, p operUpPair) error { return netlink.LinkDel(p.host) },
			timeout:    5 * time.Second,
			wantErr:    true,
		},
		{
			name:    "no such link",
			index:   func(operUpPair) int { return 1 << 30 },
			timeout: 5 * time.Second,
			wantErr: true,
		},
		{
			name:       "closed",
			afterWatch: func(w *OperUpWatch, _ operUpPair) error { w.Close(); return nil },
			timeout:    5 * time.Second,
			wantErr:    true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			netns := newNS(t)
			linktest.Do(t, netns, func() error {
				p, err := newOperUpPair(linktest.Name("op"))
				if err != nil {
					return err
				}
				if tt.beforeWatch != nil {
					if err := tt.beforeWatch(p); err != nil {
						return err
					}
				}
				w, err := WatchOperUp()
				if err != nil {
					return err
				}
				defer w.Close()
				if tt.afterWatch != nil {
					if err := tt.afterWatch(w, p); err != nil {
						return err
					}
				}
				index := p.host.Attrs().Index
				if tt.index != nil {
					index = tt.index(p)
				}
				start := time.Now()
				err = w.Wait(index, tt.timeout)
				t.Logf("Wait returned after %s: %v", time.Since(start), err)
				switch {
				case tt.wantErr && err == nil:
					return fmt.Errorf("Wait(%d) = nil, want an error", index)
				case tt.wantErr && !strings.Contains(err.Error(), strconv.Itoa(index)):
					return fmt.Errorf("Wait(%d) = %q, does not name the link", index, err)
				case !tt.wantErr && err != nil:
					return fmt.Errorf("Wait(%d) = %w", index, err)
				}
				return nil
			})
		})
	}
}

// operUpWaiter is OperUpWatch or oldOperUpWatch, for the benchmark.
type operUpWaiter interface {
	Wait(index int, timeout time.Duration) error
	Close()
}

// oldOperUpWatch is the implementation OperUpWatch replaced, kept for
// BenchmarkOperUpWatch: vishvananda/netlink's subscription, a goroutine
// that deserializes every link event of the namespace into a channel.
type oldOperUpWatch struct {
	events chan netlink.LinkUpdate
	done   chan struct{}
}

func oldWatchOperUp() (operUpWaiter, error) {
	w := &oldOperUpWatch{events: make(chan netlink.LinkUpdate, 64), done: make(chan struct{})}
	if err := netlink.LinkSubscribeWithOptions(w.events, w.done, netlink.LinkSubscribeOptions{}); err != nil {
		return nil, fmt.Errorf("subscribe to link events: %w", err)
	}
	return w, nil
}

func (w *oldOperUpWatch) Wait(index int, timeout time.Duration) error {
	if l, err := netlink.LinkByIndex(index); err == nil && l.Attrs().OperState == netlink.OperUp {
		return nil
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case u, ok := <-w.events:
			if !ok {
				return fmt.Errorf("link events stopped while waiting for link %d to be up", index)
			}
			if int(u.Index) == index && u.Attrs().OperState == netlink.OperUp {
				return nil
			}
		case <-deadline.C:
			return fmt.Errorf("link %d not operationally up after %s", index, timeout)
		}
	}
}

func (w *oldOperUpWatch) Close() { close(w.done) }

// processCPU returns the CPU time (user and system) of the process so far,
// the old watch's goroutine included.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkOperUpWatch compares the watch with the vishvananda/netlink
// subscription it replaced, as bridge-v6 uses it: open, wait, close.
// "up": the link is already up at Wait. "event": it comes up after the
// watch is opened. "busy": so does it, after 20 other links changed state.
// Between iterations (not timed) the link goes down again. cpu-ns/op is
// the process's CPU time, the old watch's goroutine and the untimed part
// included.
func BenchmarkOperUpWatch(b *testing.B) {
	impls := []struct {
		name  string
		watch func() (operUpWaiter, error)
	}{
		{"old", oldWatchOperUp},
		{"new", func() (operUpWaiter, error) { return WatchOperUp() }},
	}
	scenarios := []struct {
		name    string
		peerUp  bool // peer left up: the link is up at every Wait
		unrelat int  // unrelated links flipped between watch and peer up
	}{
		{name: "up", peerUp: true},
		{name: "event"},
		{name: "busy", unrelat: 20},
	}
	for _, sc := range scenarios {
		for _, impl := range impls {
			b.Run(sc.name+"/"+impl.name, func(b *testing.B) {
				linktest.RequireRoot(b)
				netns := linktest.NewNS(b)
				linktest.Do(b, netns, func() error {
					return benchOperUpWatch(b, impl.watch, sc.peerUp, sc.unrelat)
				})
			})
		}
	}
}

func benchOperUpWatch(b *testing.B, watch func() (operUpWaiter, error), peerUp bool, unrelated int) error {
	p, err := newOperUpPair(linktest.Name("opb"))
	if err != nil {
		return err
	}
	index := p.host.Attrs().Index
	if peerUp {
		if err := setPeerUp(p); err != nil {
			return err
		}
		if err := waitOperState(index, true); err != nil {
			return err
		}
	}
	others, err := addUnrelatedLinks(unrelated)
	if err != nil {
		return err
	}
	othersUp := true
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU(b)
	for i := 0; i < b.N; i++ {
		w, err := watch()
		if err != nil {
			return err
		}
		for _, l := range others {
			if othersUp {
				err = netlink.LinkSetDown(l)
			} else {
				err = netlink.LinkSetUp(l)
			}
			if err != nil {
				return err
			}
		}
		othersUp = !othersUp
		if !peerUp {
			if err := setPeerUp(p); err != nil {
				return err
			}
		}
		if err := w.Wait(index, 5*time.Second); err != nil {
			return err
		}
		w.Close()
		if !peerUp {
			b.StopTimer()
			if err := netlink.LinkSetDown(p.peer); err != nil {
				return err
			}
			if err := waitOperState(index, false); err != nil {
				return err
			}
			b.StartTimer()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
	return nil
}
