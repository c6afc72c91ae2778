package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/v6cni/v6cni/pkg/etcdtest"
	"github.com/v6cni/v6cni/pkg/ipammetrics"
	"github.com/v6cni/v6cni/pkg/store"
)

// TestUnparsableMACReported: a stored dhcpv6-stateful handle whose MAC does
// not parse (so DHCPv6 can never give that attachment its address) is
// reported at Sync by an error log naming the attachment, not skipped
// silently.
func TestUnparsableMACReported(t *testing.T) {
	cli := etcdtest.Client(t)
	st := store.New(cli)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := store.AttachmentID{Network: "badmac", ContainerID: "c-badmac", IfName: "eth0"}
	h := store.Handle{AttachmentID: id, Node: "n1", MAC: "not-a-mac", Bridge: "h2nobr0", Mode: "dhcpv6-stateful",
		IPs: []store.IP{{Address: netip.MustParsePrefix("2001:db8:bad::5/64"), Block: netip.MustParsePrefix("2001:db8:bad::/64")}}}
	val, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, store.HandleKey(id), string(val)); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	svcCtx, stop := context.WithCancel(context.Background())
	s := newServices(svcCtx, st, "n1", slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(func() { stop(); s.stop() })
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "stored MAC unparsable") || !strings.Contains(out, id.String()) {
		t.Fatalf("no error naming %s for its unparsable MAC in the log:\n%s", id, out)
	}
	m := ipammetrics.New(emptySource{})
	m.SetServices(s.unservable)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if want := `v6cni_ipamd_dhcpv6_unservable_attachments{bridge="h2nobr0"} 1`; !strings.Contains(rec.Body.String(), want) {
		t.Fatalf("metrics lack %s:\n%s", want, rec.Body.String())
	}
}

type emptySource struct{}

func (emptySource) Node() string                      { return "n1" }
func (emptySource) Usage() []ipammetrics.Usage        { return nil }
func (emptySource) PoolSizes() []ipammetrics.PoolSize { return nil }
