package ipamserver

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// TestDelDuplicates: a DEL naming duplicates quarantines them for the
// config's duplicateQuarantine (default 10 min); the state shows them held
// by quarantine:<container>; the next ADD gets another address.
func TestDelDuplicates(t *testing.T) {
	st := store.New(etcdtest.Client(t))
	n := startNode(t, st, "dup1", true)
	ctx := context.Background()
	for _, tt := range []struct {
		name, quarantine string
		kept             bool
	}{
		{"default", "", true},
		{"0s", `,"duplicateQuarantine":"0s"`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conf := strings.Replace(nodesConf, `"type":"ipam-v6"`, `"type":"ipam-v6"`+tt.quarantine, 1)
			req := func(cid string) *ipamapi.Request {
				return &ipamapi.Request{Network: "nodes", ContainerID: cid, IfName: "eth0", Config: []byte(conf)}
			}
			res, err := n.cli.Add(ctx, req("d-"+tt.name))
			if err != nil {
				t.Fatal(err)
			}
			dup, _ := netip.AddrFromSlice(res.IPs[0].Address.IP)
			del := req("d-" + tt.name)
			del.Duplicates = []netip.Addr{dup.Unmap()}
			if err := n.cli.Del(ctx, del); err != nil {
				t.Fatal(err)
			}
			state, err := n.cli.State(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var holder string
			for _, nw := range state.Networks {
				for _, b := range nw.Blocks {
					for _, a := range b.Addrs {
						if a.Addr == dup.Unmap().String() {
							holder = a.ContainerID
						}
					}
				}
			}
			if want := map[bool]string{true: store.QuarantineHolder + "d-" + tt.name, false: ""}[tt.kept]; holder != want {
				t.Errorf("ipamd state: %s held by %q, want %q", dup, holder, want)
			}
			if tt.kept {
				qs, err := st.Quarantines(ctx)
				if err != nil || len(qs) != 1 || qs[0].Expires.Sub(qs[0].Since).Round(time.Second) != 10*time.Minute {
					t.Errorf("quarantine records %+v, %v; want one of 10 minutes", qs, err)
				}
				again, err := n.cli.Add(ctx, req("d-"+tt.name))
				if err != nil {
					t.Fatal(err)
				}
				if again.IPs[0].Address.IP.Equal(dup.AsSlice()) {
					t.Errorf("the retried ADD got the quarantined %s", dup)
				}
				if err := n.cli.Del(ctx, req("d-"+tt.name)); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
