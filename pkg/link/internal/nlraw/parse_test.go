package nlraw

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// errMsg returns an NLMSG_ERROR datagram: header with flags and seq, then
// payload.
func errMsg(flags uint16, seq uint32, payload []byte) []byte {
	b := native.AppendUint32(nil, uint32(unix.SizeofNlMsghdr+len(payload)))
	b = native.AppendUint16(b, unix.NLMSG_ERROR)
	b = native.AppendUint16(b, flags) // no NLM_F_REQUEST: it is an answer
	b = native.AppendUint32(b, seq)
	b = native.AppendUint32(b, 0)
	return append(b, payload...)
}

func TestAckError(t *testing.T) {
	hdr := func(l uint32) []byte { // a copied-back request header
		b := make([]byte, unix.SizeofNlMsghdr)
		native.PutUint32(b, l)
		return b
	}
	errno := func(e int32) []byte { return native.AppendUint32(nil, uint32(e)) }
	msgAttr := nl.NewRtAttr(unix.NLMSGERR_ATTR_MSG, nl.ZeroTerminated("Master device not found")).Serialize()
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	for _, tt := range []struct {
		name      string
		flags     uint16
		data      []byte
		wantErrno error // nil: an ack
		wantMsg   string
		truncated bool // not a kernel error: the ack itself is cut
	}{
		{name: "ack", flags: unix.NLM_F_CAPPED, data: join(errno(0), hdr(16))},
		{name: "ack without the request", data: errno(0)},
		{name: "errno only", flags: unix.NLM_F_CAPPED, data: join(errno(-int32(unix.EEXIST)), hdr(16)), wantErrno: unix.EEXIST},
		{name: "errno, nothing after it", flags: unix.NLM_F_ACK_TLVS, data: errno(-int32(unix.ENODEV)), wantErrno: unix.ENODEV},
		{name: "capped, with message", flags: unix.NLM_F_CAPPED | unix.NLM_F_ACK_TLVS, data: join(errno(-int32(unix.EINVAL)), hdr(40), msgAttr), wantErrno: unix.EINVAL, wantMsg: "Master device not found"},
		{name: "whole request copied back, with message", flags: unix.NLM_F_ACK_TLVS, data: join(errno(-int32(unix.EINVAL)), hdr(24), make([]byte, 8), msgAttr), wantErrno: unix.EINVAL, wantMsg: "Master device not found"},
		{name: "copied-back request longer than the message", flags: unix.NLM_F_ACK_TLVS, data: join(errno(-int32(unix.EINVAL)), hdr(4096), msgAttr), wantErrno: unix.EINVAL},
		{name: "copied-back request shorter than a header", flags: unix.NLM_F_ACK_TLVS, data: join(errno(-int32(unix.EINVAL)), hdr(2), msgAttr), wantErrno: unix.EINVAL},
		{name: "message attribute cut", flags: unix.NLM_F_CAPPED | unix.NLM_F_ACK_TLVS, data: join(errno(-int32(unix.EPERM)), hdr(40), msgAttr[:len(msgAttr)-8]), wantErrno: unix.EPERM},
		{name: "truncated errno", data: []byte{1, 2}, truncated: true},
		{name: "empty", truncated: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Through Messages, as Do reads it.
			var err error
			n := 0
			if !Messages(errMsg(tt.flags, 1, tt.data), func(h unix.NlMsghdr, data []byte) bool {
				n++
				err = AckError(h, data)
				return true
			}) || n != 1 {
				t.Fatalf("Messages: %d messages, want 1", n)
			}
			var kerr *Error
			switch {
			case tt.truncated:
				if err == nil || errors.As(err, &kerr) {
					t.Errorf("AckError = %#v, want a non-kernel error", err)
				}
			case tt.wantErrno == nil:
				if err != nil {
					t.Errorf("AckError = %v, want nil", err)
				}
			case !errors.As(err, &kerr) || !errors.Is(err, tt.wantErrno) || kerr.Msg != tt.wantMsg:
				t.Errorf("AckError = %#v, want %v with message %q", err, tt.wantErrno, tt.wantMsg)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	if s := (&Error{Errno: unix.EEXIST}).Error(); s != unix.EEXIST.Error() {
		t.Errorf("Error() = %q", s)
	}
	if s := (&Error{Errno: unix.EINVAL, Msg: "bad"}).Error(); s != unix.EINVAL.Error()+": bad" {
		t.Errorf("Error() = %q", s)
	}
}

func TestMessages(t *testing.T) {
	m := NewMsg(nil)
	m.Begin(unix.RTM_GETLINK, 0, 1)
	m.IfInfomsg(0, 0, 0)
	m.Begin(unix.RTM_GETLINK, 0, 2)
	m.Fixed([]byte{1, 2, 3}) // padded to 4
	two := m.Bytes()

	seqs := func(b []byte, stopAt uint32) ([]uint32, bool) {
		var got []uint32
		ok := Messages(b, func(h unix.NlMsghdr, _ []byte) bool {
			got = append(got, h.Seq)
			return h.Seq != stopAt
		})
		return got, ok
	}
	for _, tt := range []struct {
		name   string
		b      []byte
		stopAt uint32
		want   []uint32
		wantOK bool
	}{
		{"two", two, 0, []uint32{1, 2}, true},
		{"stopped by f", two, 1, []uint32{1}, true},
		{"second cut", two[:len(two)-4], 0, []uint32{1}, false},
		{"trailing bytes", append(bytes.Clone(two), 0, 0), 0, []uint32{1, 2}, false},
		{"length below a header", func() []byte { b := bytes.Clone(two); native.PutUint32(b, 3); return b }(), 0, nil, false},
		{"empty", nil, 0, nil, true},
	} {
		got, ok := seqs(tt.b, tt.stopAt)
		if ok != tt.wantOK || !slicesEqual(got, tt.want) {
			t.Errorf("%s: Messages saw %v, ok %v; want %v, %v", tt.name, got, ok, tt.want, tt.wantOK)
		}
	}
}

func slicesEqual(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseLinkMsg(t *testing.T) {
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = 9
	payload := bytes.Join([][]byte{
		msg.Serialize(),
		nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(1500)).Serialize(),
		nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated("v6c0123456789ab")).Serialize(),
	}, nil)
	m, ok := ParseLinkMsg(payload)
	if !ok || m.Index != 9 || m.Name != "v6c0123456789ab" {
		t.Errorf("ParseLinkMsg = %+v, %v; want index 9, name v6c0123456789ab, true", m, ok)
	}
	// A truncated last attribute is not read past.
	if m, ok := ParseLinkMsg(payload[:len(payload)-4]); !ok || m.Name != "" {
		t.Errorf("ParseLinkMsg of a truncated message: name %q, ok %v", m.Name, ok)
	}
	if _, ok := ParseLinkMsg(payload[:8]); ok {
		t.Error("ParseLinkMsg of a short message: ok")
	}
	if m.Peer != 0 || m.OperState != 0 {
		t.Errorf("ParseLinkMsg without IFLA_LINK and IFLA_OPERSTATE = %+v, want peer 0, operState 0", m)
	}
	withMore := append(bytes.Clone(payload),
		append(nl.NewRtAttr(unix.IFLA_LINK, nl.Uint32Attr(7)).Serialize(),
			nl.NewRtAttr(unix.IFLA_OPERSTATE, []byte{6}).Serialize()...)...)
	if m, ok := ParseLinkMsg(withMore); !ok || m.Peer != 7 || m.OperState != 6 || m.Name != "v6c0123456789ab" {
		t.Errorf("ParseLinkMsg = %+v, %v; want peer 7, operState 6 and the name", m, ok)
	}
}

// FuzzAckError feeds AckError (through Messages, as Do does) what a kernel,
// or anything else on the socket, might send: it must never panic, and an
// errno of 0 in a whole message is an ack.
func FuzzAckError(f *testing.F) {
	msgAttr := nl.NewRtAttr(unix.NLMSGERR_ATTR_MSG, nl.ZeroTerminated("Master device not found")).Serialize()
	einval := native.AppendUint32(nil, negErrno(unix.EINVAL))
	f.Add(errMsg(unix.NLM_F_CAPPED|unix.NLM_F_ACK_TLVS, 1, append(append(bytes.Clone(einval), make([]byte, 16)...), msgAttr...)))
	f.Add(errMsg(unix.NLM_F_ACK_TLVS, 1, append(bytes.Clone(einval), 0xff, 0xff, 0xff, 0xff)))
	f.Add(errMsg(0, 1, native.AppendUint32(nil, 0)))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		Messages(b, func(h unix.NlMsghdr, data []byte) bool {
			err := AckError(h, data)
			if len(data) >= 4 && native.Uint32(data) == 0 && err != nil {
				t.Errorf("errno 0: AckError = %v, want nil", err)
			}
			if err != nil {
				_ = err.Error()
			}
			ParseLinkMsg(data)
			return true
		})
	})
}

// negErrno is the errno field of an NLMSG_ERROR for e: -e as a u32.
func negErrno(e unix.Errno) uint32 { return uint32(-int32(e)) }
