package bridgesvc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/ipammetrics"
	"github.com/v6cni/v6cni/pkg/daemon/store"
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
	var logs lockedBuffer // the servers' goroutines log too
	svcCtx, stop := context.WithCancel(context.Background())
	s := New(svcCtx, st, "n1", slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(func() { stop(); s.Stop() })
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "stored MAC unparsable") || !strings.Contains(out, id.String()) {
		t.Fatalf("no error naming %s for its unparsable MAC in the log:\n%s", id, out)
	}
	var cerr *types.Error
	if err := s.Status("badmac"); !errors.As(err, &cerr) || cerr.Code != types.ErrLimitedConnectivity || !strings.Contains(cerr.Details, "stored MAC unparsable") {
		t.Fatalf("STATUS of the network = %v, want 51 naming the unparsable MAC", err)
	}
	m := ipammetrics.New(emptySource{})
	m.SetServices(s.Metrics)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if want := `v6cni_ipamd_dhcpv6_unservable_attachments{bridge="h2nobr0"} 1`; !strings.Contains(rec.Body.String(), want) {
		t.Fatalf("metrics lack %s:\n%s", want, rec.Body.String())
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent loggers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type emptySource struct{}

func (emptySource) Node() string                      { return "n1" }
func (emptySource) Usage() []ipammetrics.Usage        { return nil }
func (emptySource) PoolSizes() []ipammetrics.PoolSize { return nil }

// TestServiceFailureInStatus: while a network's bridge cannot be served
// (here it does not exist: the RA and DHCPv6 servers keep retrying),
// STATUS for that network says 51 naming the bridge and both services;
// another network's STATUS is not affected.
func TestServiceFailureInStatus(t *testing.T) {
	cli := etcdtest.Client(t)
	st := store.New(cli)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := store.AttachmentID{Network: "nobridge", ContainerID: "c-nobridge", IfName: "eth0"}
	h := store.Handle{AttachmentID: id, Node: "n1", MAC: "02:00:00:00:00:01", Bridge: "h2gone0", Mode: "dhcpv6-stateless",
		IPs: []store.IP{{Address: netip.MustParsePrefix("2001:db8:9a::5/64"), Block: netip.MustParsePrefix("2001:db8:9a::/64")}}}
	val, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, store.HandleKey(id), string(val)); err != nil {
		t.Fatal(err)
	}
	svcCtx, stop := context.WithCancel(context.Background())
	s := New(svcCtx, st, "n1", slog.New(slog.DiscardHandler))
	t.Cleanup(func() { stop(); s.Stop() })
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var got error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = s.Status("nobridge"); got != nil && strings.Contains(got.Error(), "DHCPv6 not served") {
			break
		}
	}
	var cerr *types.Error
	if !errors.As(got, &cerr) || cerr.Code != types.ErrLimitedConnectivity {
		t.Fatalf("STATUS of the network = %v, want CNI code 51", got)
	}
	for _, want := range []string{"h2gone0", "router advertisements not served", "DHCPv6 not served"} {
		if !strings.Contains(cerr.Details, want) {
			t.Errorf("STATUS details %q lack %q", cerr.Details, want)
		}
	}
	if err := s.Status("othernet"); err != nil {
		t.Errorf("STATUS of another network = %v, want nil", err)
	}
	m := ipammetrics.New(emptySource{})
	m.SetServices(s.Metrics)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`v6cni_ipamd_service_up{bridge="h2gone0",service="ra"} 0`, `v6cni_ipamd_service_up{bridge="h2gone0",service="dhcpv6"} 0`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, rec.Body.String())
		}
	}
}
