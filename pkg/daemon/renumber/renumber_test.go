package renumber

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"testing"
	"time"

	"github.com/v6cni/v6cni/pkg/link"
)

func TestValidate(t *testing.T) {
	ok := Job{Netns: "/run/netns/x", IfName: "eth0",
		Old: netip.MustParsePrefix("2001:db8:1::2/64"), New: netip.MustParsePrefix("2001:db8:2::2/64")}
	for _, tc := range []struct {
		name string
		edit func(*Job)
		bad  bool
	}{
		{"static by default", func(*Job) {}, false},
		{"slaac", func(j *Job) { j.Mode = "slaac" }, false},
		{"dhcpv6-stateful", func(j *Job) { j.Mode = "dhcpv6-stateful" }, false},
		{"unknown mode", func(j *Job) { j.Mode = "eui64" }, true},
		{"no netns", func(j *Job) { j.Netns = "" }, true},
		{"no ifname", func(j *Job) { j.IfName = "" }, true},
		{"no old", func(j *Job) { j.Old = netip.Prefix{} }, true},
		{"no new", func(j *Job) { j.New = netip.Prefix{} }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := ok
			tc.edit(&j)
			if err := j.validate(); (err != nil) != tc.bad {
				t.Errorf("validate() = %v, want error %v", err, tc.bad)
			}
		})
	}
}

func TestReasonOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Reason
	}{
		{fmt.Errorf("open netns /x: %w", fs.ErrNotExist), NetnsGone},
		{fmt.Errorf("/x is %w", link.ErrNotNetNS), NetnsGone},
		{fmt.Errorf("%w: eth0 has MAC …", link.ErrIfaceMismatch), NetnsMismatch},
		{errors.New("add address: file exists"), Netlink},
	} {
		if got := reasonOf(tc.err); got != tc.want {
			t.Errorf("reasonOf(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

// TestSubmitRefuses: a malformed job is counted and never reaches a
// worker (no batch); jobs submitted after Close are dropped.
func TestSubmitRefuses(t *testing.T) {
	var batches int
	var reasons []Reason
	w := New(Config{OnBatch: func(Batch) { batches++ }, OnError: func(r Reason) { reasons = append(reasons, r) }})
	w.Submit(Job{Netns: "/x", IfName: "eth0"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w.Submit(Job{Netns: "/x", IfName: "eth0", Old: netip.MustParsePrefix("2001:db8:1::2/64"), New: netip.MustParsePrefix("2001:db8:2::2/64")})
	st := w.Stats()
	if st.Errors[Invalid] != 1 || st.Done != 0 || st.Pending != 0 || batches != 0 || len(reasons) != 1 || reasons[0] != Invalid {
		t.Errorf("stats %+v, batches %d, reasons %v: want one invalid job and nothing else", st, batches, reasons)
	}
}
