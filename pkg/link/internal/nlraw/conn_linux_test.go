package nlraw

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// getLink appends an RTM_GETLINK for name with flags to m.
func getLink(m *Msg, flags uint16, seq uint32, name string) {
	m.Begin(unix.RTM_GETLINK, flags, seq)
	m.IfInfomsg(0, 0, 0)
	m.AttrString(unix.IFLA_IFNAME, name)
}

// TestDo runs exchanges with the kernel of the test's own namespace: the
// requests only read (RTM_GETLINK), so no root is needed.
func TestDo(t *testing.T) {
	c, err := Open(Options{ExtAck: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	t.Run("one request, answer and ack", func(t *testing.T) {
		m := NewMsg(nil)
		getLink(&m, unix.NLM_F_ACK, c.Seq(), "lo")
		var got LinkMsg
		err := c.Request(m.Bytes(), func(typ uint16, data []byte) {
			if typ == unix.RTM_NEWLINK {
				got, _ = ParseLinkMsg(data)
			}
		})
		if err != nil || got.Name != "lo" || got.Index != 1 {
			t.Errorf("Request = %v, link %+v; want nil, lo with index 1", err, got)
		}
	})

	t.Run("kernel error", func(t *testing.T) {
		m := NewMsg(nil)
		getLink(&m, unix.NLM_F_ACK, c.Seq(), "v6cnonexistent")
		err := c.Request(m.Bytes(), nil)
		var kerr *Error
		if !errors.As(err, &kerr) || !errors.Is(err, unix.ENODEV) {
			t.Errorf("Request = %#v, want an *Error with ENODEV", err)
		}
	})

	t.Run("batch", func(t *testing.T) {
		m := NewMsg(nil)
		getLink(&m, unix.NLM_F_ACK, c.Seq(), "v6cnonexistent")
		getLink(&m, unix.NLM_F_ACK, c.Seq(), "lo")
		acks := []error{errors.New("not acked"), errors.New("not acked")}
		var answered []int
		err := c.Do(m.Bytes(), func(i int, err error) { acks[i] = err }, func(i int, typ uint16, _ []byte) {
			answered = append(answered, i)
		})
		if err != nil || !errors.Is(acks[0], unix.ENODEV) || acks[1] != nil || len(answered) != 1 || answered[0] != 1 {
			t.Errorf("Do = %v, acks %v, answers to %v; want nil, [ENODEV nil], [1]", err, acks, answered)
		}
	})

	t.Run("late answers skipped", func(t *testing.T) {
		// An earlier request whose answers were never read.
		m := NewMsg(nil)
		getLink(&m, unix.NLM_F_ACK, c.Seq(), "v6cnonexistent")
		if err := c.Send(m.Bytes()); err != nil {
			t.Fatal(err)
		}
		m = NewMsg(nil)
		getLink(&m, unix.NLM_F_ACK, c.Seq(), "lo")
		if err := c.Request(m.Bytes(), nil); err != nil {
			t.Errorf("Request after an unread answer = %v, want nil", err)
		}
	})

	for _, tt := range []struct {
		name  string
		build func(m *Msg)
	}{
		{"no ack asked", func(m *Msg) { getLink(m, 0, c.Seq(), "lo") }},
		{"sequence numbers not consecutive", func(m *Msg) {
			getLink(m, unix.NLM_F_ACK, c.Seq(), "lo")
			c.Seq()
			getLink(m, unix.NLM_F_ACK, c.Seq(), "lo")
		}},
		{"empty", func(*Msg) {}},
		{"cut", func(m *Msg) { getLink(m, unix.NLM_F_ACK, c.Seq(), "lo"); m.b = m.Bytes()[:10] }},
	} {
		t.Run("refused: "+tt.name, func(t *testing.T) {
			m := NewMsg(nil)
			tt.build(&m)
			b := m.b
			if tt.name != "cut" {
				b = m.Bytes()
			}
			if err := c.Do(b, nil, nil); err == nil {
				t.Error("Do = nil, want an error before anything is sent")
			}
		})
	}

	c.Close()
	c.Close() // twice is fine
	if c.Fd() != -1 {
		t.Errorf("Fd after Close = %d, want -1", c.Fd())
	}
}

func TestSubscribe(t *testing.T) {
	var c Conn
	if err := c.Init(Options{Groups: 1 << (unix.RTNLGRP_LINK - 1), Buf: make([]byte, 512)}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.buf) != 512 {
		t.Errorf("receive buffer %d bytes, want 512", len(c.buf))
	}
	// Whatever links of the host change meanwhile, a read that does not
	// wait returns at once: a datagram or EAGAIN.
	if _, _, err := c.Recv(unix.MSG_DONTWAIT); err != nil && err != unix.EAGAIN {
		t.Errorf("Recv = %v, want a datagram or EAGAIN", err)
	}
}
