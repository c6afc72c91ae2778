package ipamapi

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

// TestCheckState: CHECK's answer decodes into the record's addresses; the
// "{}" an ipamd from before CheckResult answers is no address (the plugin
// then checks prevResult's), and Check still succeeds on it.
func TestCheckState(t *testing.T) {
	until := time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, body string
		want       []CheckIP
	}{
		{"older ipamd", `{}`, nil},
		{"renumbered", `{"ips":[{"address":"2001:db8:2::2/64","gateway":"2001:db8:2::1","replaces":"2001:db8:1::2"},` +
			`{"address":"2001:db8:1::2/64","gateway":"2001:db8:1::1","deprecated":true,"validUntil":"2026-12-06T07:00:00Z"}]}`,
			[]CheckIP{
				{Address: netip.MustParsePrefix("2001:db8:2::2/64"), Gateway: netip.MustParseAddr("2001:db8:2::1"), Replaces: netip.MustParseAddr("2001:db8:1::2")},
				{Address: netip.MustParsePrefix("2001:db8:1::2/64"), Gateway: netip.MustParseAddr("2001:db8:1::1"), Deprecated: true, ValidUntil: until},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "s.sock")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != PathCheck {
					http.NotFound(w, r)
					return
				}
				fmt.Fprint(w, tc.body)
			})}
			go srv.Serve(l)
			t.Cleanup(func() { srv.Close() })
			c := NewClient(sock)
			got, err := c.CheckState(context.Background(), &Request{Network: "n"})
			if err != nil {
				t.Fatal(err)
			}
			if len(got.IPs) != len(tc.want) {
				t.Fatalf("IPs %+v, want %+v", got.IPs, tc.want)
			}
			for i := range got.IPs {
				if got.IPs[i] != tc.want[i] {
					t.Errorf("[%d] %+v, want %+v", i, got.IPs[i], tc.want[i])
				}
			}
			if err := c.Check(context.Background(), &Request{Network: "n"}); err != nil {
				t.Errorf("Check: %v", err)
			}
		})
	}
}
