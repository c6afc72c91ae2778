package link

import (
	"fmt"
	"time"

	"github.com/v6cni/v6cni/pkg/link/internal/nlraw"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The watch reads link events itself, in the thread that waits. With
// vishvananda/netlink's LinkSubscribe a goroutine (hence an OS thread)
// read and fully deserialized every RTM_NEWLINK of the namespace (all
// attributes, stats) into a channel: ~4.5% of the plugin's CPU. Here the
// events wait in the socket's queue until Wait reads them, and only the
// index and IFLA_OPERSTATE of each are looked at. Its loop is not
// nlraw.Conn.Do's: it waits (poll) for events no request asked for, and
// recovers from a full queue by asking again.

const (
	// ifOperUp is IF_OPER_UP (RFC 2863 operstate, include/uapi/linux/if.h).
	ifOperUp = 6
	// rtextFilterSkipStats is RTEXT_FILTER_SKIP_STATS
	// (include/uapi/linux/rtnetlink.h): it asks the kernel to leave
	// statistics, which Wait does not read, out of its answer to
	// RTM_GETLINK; kernels that predate it ignore it.
	rtextFilterSkipStats = 1 << 3
	// getLinkLen is the length of OperUpWatch's RTM_GETLINK: nlmsghdr,
	// ifinfomsg and IFLA_EXT_MASK.
	getLinkLen = unix.SizeofNlMsghdr + unix.SizeofIfInfomsg + unix.SizeofRtAttr + 4
)

// OperUpWatch waits for a link to become operationally up, on netlink link
// events (no polling). Open it before the event can happen (before the
// container end of the veth goes up), wait after: the kernel queues the
// events on the watch's socket from WatchOperUp on, so none is missed
// (and if the queue overflows, Wait asks the kernel for the link's state
// again). Not safe for concurrent use.
type OperUpWatch struct {
	c   nlraw.Conn
	seq uint32 // of the last RTM_GETLINK
	req [getLinkLen]byte
	pfd [1]unix.PollFd
}

// WatchOperUp subscribes to the link events (RTNLGRP_LINK) of the network
// namespace of the calling thread. The watch stays in that namespace:
// Wait may be called from any thread.
func WatchOperUp() (*OperUpWatch, error) {
	w := new(OperUpWatch)
	if err := w.c.Init(nlraw.Options{Groups: 1 << (unix.RTNLGRP_LINK - 1)}); err != nil {
		return nil, fmt.Errorf("watch link events: %w", err)
	}
	w.pfd[0] = unix.PollFd{Fd: int32(w.c.Fd()), Events: unix.POLLIN}
	return w, nil
}

// Wait returns when the link with this index is operationally up: for the
// host end of a veth on a bridge, the bridge has then enabled the port and
// forwards its frames. It returns an error after timeout, or at once if
// the link does not exist or is removed.
//
// It first asks the kernel for the link's state (one RTM_GETLINK on the
// watch's socket), as the link may have come up before Wait, then reads the
// events queued since WatchOperUp and those that follow, in order, the
// answer among them. Events and answer are read alike: any RTM_NEWLINK of
// the link saying it is up ends the wait, so an event queued before the
// answer, of a change the answer did not see yet, is not lost either.
//
// The kernel drops what does not fit in the socket's receive queue (many
// other links changing at once) and then fails the next read with ENOBUFS,
// once, until the queue has been emptied. Wait then empties it and asks
// for the link's state again: the event of the link may have been dropped.
func (w *OperUpWatch) Wait(index int, timeout time.Duration) error {
	if w.c.Fd() < 0 {
		return fmt.Errorf("wait for link %d to be up: watch closed", index)
	}
	deadline := time.Now().Add(timeout)
	if err := w.getLink(index); err != nil {
		return err
	}
	ask := false // ask the kernel for the link's state once the queue is empty
	for {
		data, truncated, err := w.c.Recv(unix.MSG_DONTWAIT)
		switch {
		case err == unix.ENOBUFS:
			ask = true
			continue
		case err == unix.EAGAIN:
			if ask {
				if err := w.getLink(index); err != nil {
					return err
				}
				ask = false
				continue
			}
			if err := w.poll(index, timeout, deadline); err != nil {
				return err
			}
			continue
		case err != nil:
			return fmt.Errorf("wait for link %d to be up: read link events: %w", index, err)
		}
		if truncated {
			// Larger than the buffer (a link with many SR-IOV VFs): it
			// may have been the link's, ask again.
			ask = true
			continue
		}
		up, complete, err := w.scan(data, index)
		if err != nil || up {
			return err
		}
		if !complete {
			ask = true
		}
		if time.Now().After(deadline) {
			return notUpError(index, timeout)
		}
	}
}

// poll blocks until the socket has something to read or the deadline has
// passed (an error then).
func (w *OperUpWatch) poll(index int, timeout time.Duration, deadline time.Time) error {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return notUpError(index, timeout)
		}
		// Rounded up: poll(2) would return early for less than 1 ms.
		ms := int((left + time.Millisecond - 1) / time.Millisecond)
		w.pfd[0].Revents = 0
		n, err := unix.Poll(w.pfd[:], ms)
		if err == unix.EINTR {
			continue // the Go runtime preempts with signals
		}
		if err != nil {
			return fmt.Errorf("wait for link %d to be up: poll link events: %w", index, err)
		}
		if n > 0 {
			return nil
		}
	}
}

func notUpError(index int, timeout time.Duration) error {
	return fmt.Errorf("link %d not operationally up after %s", index, timeout)
}

// getLink sends an RTM_GETLINK for the link index on the watch's socket;
// the answer is read with the events (see Wait). No ack is asked for: the
// answer is either the link or an error.
func (w *OperUpWatch) getLink(index int) error {
	w.seq = w.c.Seq()
	m := nlraw.NewMsg(w.req[:0])
	m.Begin(unix.RTM_GETLINK, 0, w.seq)
	m.IfInfomsg(int32(index), 0, 0)
	m.AttrUint32(unix.IFLA_EXT_MASK, rtextFilterSkipStats)
	if err := w.c.Send(m.Bytes()); err != nil {
		return fmt.Errorf("wait for link %d to be up: ask for its state: %w", index, err)
	}
	return nil
}

// scan reads the messages of one datagram: up when one says the link index
// is operationally up, an error when the kernel answered the last
// RTM_GETLINK with one or the link was removed, complete false when the
// datagram ends in a truncated message.
func (w *OperUpWatch) scan(b []byte, index int) (up, complete bool, err error) {
	complete = nlraw.Messages(b, func(h unix.NlMsghdr, data []byte) bool {
		switch h.Type {
		case unix.RTM_NEWLINK:
			if m, ok := nlraw.ParseLinkMsg(data); ok && m.Index == index && m.OperState == ifOperUp {
				up = true
			}
		case unix.RTM_DELLINK:
			if m, ok := nlraw.ParseLinkMsg(data); ok && m.Index == index {
				err = fmt.Errorf("link %d removed while waiting for it to be up", index)
			}
		case unix.NLMSG_ERROR:
			if h.Seq == w.seq {
				if aerr := nlraw.AckError(h, data); aerr != nil {
					err = fmt.Errorf("look up link %d: %w", index, aerr)
				}
			}
		}
		return !up && err == nil
	})
	if up || err != nil {
		return up, true, err
	}
	return false, complete, nil
}

// Close ends the subscription. It may be called more than once.
func (w *OperUpWatch) Close() { w.c.Close() }

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
