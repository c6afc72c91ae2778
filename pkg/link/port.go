package link

import (
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
)

// OperUpWatch waits for a link of the calling thread's network namespace
// to become operationally up, on netlink link events (no polling). Open it
// before the event can happen (before the container end of the veth goes
// up), wait after.
type OperUpWatch struct {
	events chan netlink.LinkUpdate
	done   chan struct{}
}

// WatchOperUp subscribes to link events in the namespace of the calling
// thread.
func WatchOperUp() (*OperUpWatch, error) {
	w := &OperUpWatch{events: make(chan netlink.LinkUpdate, 64), done: make(chan struct{})}
	if err := netlink.LinkSubscribeWithOptions(w.events, w.done, netlink.LinkSubscribeOptions{}); err != nil {
		return nil, fmt.Errorf("subscribe to link events: %w", err)
	}
	return w, nil
}

// Wait returns when the link with this index is operationally up: for the
// host end of a veth on a bridge, the bridge has then enabled the port and
// forwards its frames. It returns an error after timeout.
func (w *OperUpWatch) Wait(index int, timeout time.Duration) error {
	// The link may have come up before the first event was read.
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

// Close ends the subscription.
func (w *OperUpWatch) Close() { close(w.done) }

// SetHairpin turns hairpin mode on for the bridge port name: frames may be
// sent back out of the port they came in on (a container reaching itself
// through a service address).
func SetHairpin(name string) error {
	l, err := linkByName(name)
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := netlink.LinkSetHairpin(l, true); err != nil {
		return fmt.Errorf("set hairpin mode on %s: %w", name, err)
	}
	return nil
}

// SetPromisc puts l in promiscuous mode, unless it already is.
func SetPromisc(l netlink.Link) error {
	if l.Attrs().Promisc != 0 {
		return nil
	}
	if err := netlink.SetPromiscOn(l); err != nil {
		return fmt.Errorf("set %s promiscuous: %w", l.Attrs().Name, err)
	}
	return nil
}
