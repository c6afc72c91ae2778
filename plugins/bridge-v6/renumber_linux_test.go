package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/link"
)

// fakeIpamd answers the in-process IPAM's calls on a unix socket: ADD
// with one address, CHECK with the record the test sets.
type fakeIpamd struct {
	socket string
	mu     sync.Mutex
	add    string
	record ipamapi.CheckResult
}

func startFakeIpamd(t *testing.T, addResult string) *fakeIpamd {
	t.Helper()
	f := &fakeIpamd{socket: filepath.Join(t.TempDir(), "ipamd.sock"), add: addResult}
	l, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case ipamapi.PathAdd:
			fmt.Fprint(w, f.add)
		case ipamapi.PathCheck:
			_ = json.NewEncoder(w).Encode(f.record)
		default:
			fmt.Fprint(w, "{}")
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return f
}

func (f *fakeIpamd) setRecord(ips ...ipamapi.CheckIP) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record = ipamapi.CheckResult{IPs: ips}
}

// TestCheckRenumbered: for an in-process IPAM type, CHECK checks the
// container against ipamd's record: a container renumbered
// make-before-break (new address, routes via the new gateway, old address
// deprecated) passes with the ADD's prevResult and with one naming the new
// address, where prevResult alone fails; a container missing the record's
// new address fails, whichever prevResult. Every spec version.
func TestCheckRenumbered(t *testing.T) {
	const (
		oldA, oldGW = "2001:db8:100:1::2/64", "2001:db8:100:1::1"
		newA, newGW = "2001:db8:200:1::2/64", "2001:db8:200:1::1"
	)
	for _, ver := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			e := setup(t)
			d := startFakeIpamd(t, fmt.Sprintf(`{"cniVersion":"1.1.0","ips":[{"address":%q,"gateway":%q}]}`, oldA, oldGW))
			conf := func(prev string) []byte {
				extra := ""
				if prev != "" {
					extra = `,"prevResult":` + prev
				}
				return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"v6rn","type":"bridge-v6","bridge":%q,"isDefaultGateway":true%s,`+
					`"ipam":{"type":"ipam-v6","socket":%q,"ranges":[[{"subnet":"2001:db8:100::/48"}]]}}`, ver, e.bridge, extra, d.socket))
			}
			const containerID = "renum1"
			args := e.args(containerID, conf(""))
			raw, err := e.add(t, args)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			t.Cleanup(func() { _ = e.del(t, args) })
			res := mustResult(t, ver, raw)
			oldPrev := string(raw)
			newPrev := strings.ReplaceAll(strings.ReplaceAll(oldPrev, oldGW, newGW), strings.TrimSuffix(oldA, "/64"), strings.TrimSuffix(newA, "/64"))
			check := func(prev string) error {
				a := e.args(containerID, conf(prev))
				return e.inHost(t, func() error {
					return testutils.CmdCheckWithArgs(a, func() error { return cmdCheck(a) })
				})
			}
			d.setRecord(ipamapi.CheckIP{Address: netip.MustParsePrefix(oldA), Gateway: netip.MustParseAddr(oldGW)})
			if err := check(oldPrev); err != nil {
				t.Fatalf("CHECK after ADD: %v", err)
			}

			// Renumber as ipamd would: the new gateway on the bridge, the
			// container moved by link.RenumberContainer.
			if err := e.inHost(t, func() error {
				br, err := link.BridgeByName(e.bridge)
				if err != nil {
					return err
				}
				return link.AddGatewayAddrs(br, []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr(newGW), 64)}, false)
			}); err != nil {
				t.Fatal(err)
			}
			mac, err := net.ParseMAC(res.Interfaces[2].Mac)
			if err != nil {
				t.Fatal(err)
			}
			validUntil := time.Now().Add(time.Hour)
			if err := e.cont.Do(func(ns.NetNS) error {
				return link.RenumberContainer(link.Renumbering{IfName: "eth0", MAC: mac,
					Old: netip.MustParsePrefix(oldA), New: netip.MustParsePrefix(newA),
					OldGateway: netip.MustParseAddr(oldGW), NewGateway: netip.MustParseAddr(newGW), OldValidUntil: validUntil}, time.Now())
			}); err != nil {
				t.Fatal(err)
			}
			if err := check(oldPrev); err == nil {
				t.Error("CHECK of the renumbered container passed against prevResult alone (route via the old gateway)")
			}
			d.setRecord(
				ipamapi.CheckIP{Address: netip.MustParsePrefix(newA), Gateway: netip.MustParseAddr(newGW), Replaces: netip.MustParsePrefix(oldA).Addr()},
				ipamapi.CheckIP{Address: netip.MustParsePrefix(oldA), Gateway: netip.MustParseAddr(oldGW), Deprecated: true, ValidUntil: validUntil},
			)
			for name, prev := range map[string]string{"ADD's prevResult": oldPrev, "new prevResult": newPrev} {
				if err := check(prev); err != nil {
					t.Errorf("CHECK of the renumbered container with the %s: %v", name, err)
				}
			}

			// The new address missing: CHECK names it, whichever prevResult.
			if err := e.cont.Do(func(ns.NetNS) error {
				l, err := netlink.LinkByName("eth0")
				if err != nil {
					return err
				}
				return link.RemoveAddr(l, netip.MustParsePrefix(newA).Addr())
			}); err != nil {
				t.Fatal(err)
			}
			for name, prev := range map[string]string{"ADD's prevResult": oldPrev, "new prevResult": newPrev} {
				err := check(prev)
				if want := "address " + newA + " missing on eth0"; err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("CHECK without the new address, %s: %v, want %q", name, err, want)
				}
			}
		})
	}
}
