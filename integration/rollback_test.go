package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"

	"github.com/v6cni/v6cni/pkg/link"
)

// TestAddRollbackWithIpamd: an ADD that fails after ipamd allocated (here
// DAD does not finish within bridge-v6's 5 s: the container's netns sends
// 20 probes) rolls back through ipamd, in process. When the rollback
// works, nothing is left: no veth, no lease. When ipamd went away before
// the rollback, the lease stays, and the runtime's error says so next to
// the ADD's own failure (and the network's logFile has both); a DEL once
// ipamd is back releases it.
func TestAddRollbackWithIpamd(t *testing.T) {
	for _, tc := range []struct {
		name      string
		stopIpamd bool
	}{
		{"rollback releases", false},
		{"ipamd gone before the rollback", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startIpamd(t)
			n := newNet(t, d, false)
			logFile := filepath.Join(t.TempDir(), "cni.log")
			pc := n.pluginConf()
			pc["enableDad"] = true
			pc["logFile"] = logFile
			raw, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": n.Name, "plugins": []any{pc}})
			if err != nil {
				t.Fatal(err)
			}
			list, err := libcni.ConfListFromBytes(raw)
			if err != nil {
				t.Fatal(err)
			}
			c := newContainer(t, newCNI(t), list)
			// eth0 takes the netns's defaults: its DAD lasts ~20 s.
			if err := c.NS.Do(func(ns.NetNS) error {
				_, err := sysctl.Sysctl("net/ipv6/conf/default/dad_transmits", "20")
				return err
			}); err != nil {
				t.Fatal(err)
			}

			addErr := make(chan error, 1)
			start := time.Now()
			go func() {
				_, err := c.cni.AddNetworkList(context.Background(), c.list, c.runtimeConf())
				addErr <- err
			}()
			if tc.stopIpamd {
				// Once ipamd holds the address, during the DAD wait.
				for len(d.leasesOf(t, c.ID)) == 0 {
					if time.Since(start) > 4*time.Second {
						t.Fatal("no lease 4 s into the ADD")
					}
					time.Sleep(20 * time.Millisecond)
				}
				d.stop(t)
				t.Logf("ipamd stopped %v into the ADD", time.Since(start).Round(time.Millisecond))
			}
			err = <-addErr
			t.Logf("ADD failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
			want := []string{"did not finish within 5s", "still tentative"}
			if tc.stopIpamd {
				want = append(want, "rollback failed", "release the addresses (IPAM ipam-v6 DEL)", "ipamd unreachable at "+d.socket)
			}
			// The ADD's failure is not a CNI error: skel answers 999; not
			// the 11 of the failed DEL.
			requireCNIError(t, err, types.ErrInternal, want...)
			if _, lerr := netlink.LinkByName(link.HostVethName(c.ID, c.IfName)); lerr == nil {
				t.Error("the host veth is left after the failed ADD")
			}
			_ = c.NS.Do(func(ns.NetNS) error {
				if _, lerr := netlink.LinkByName(c.IfName); lerr == nil {
					t.Errorf("%s is left in the container after the failed ADD", c.IfName)
				}
				return nil
			})
			if !tc.stopIpamd {
				d.requireNoLeases(t)
				return
			}
			log, rerr := os.ReadFile(logFile)
			if rerr != nil {
				t.Fatalf("logFile: %v", rerr)
			}
			for _, w := range []string{"ipam-v6 DEL: network " + `"` + n.Name + `"`, "bridge-v6 ADD: network " + `"` + n.Name + `"`, "rollback failed"} {
				if !strings.Contains(string(log), w) {
					t.Errorf("logFile lacks %q:\n%s", w, log)
				}
			}
			d.start(t)
			if leases := d.leasesOf(t, c.ID); len(leases) == 0 {
				t.Fatal("no lease left after a rollback whose IPAM DEL failed: the test's fault did not happen")
			}
			if err := c.del(t); err != nil {
				t.Fatalf("DEL once ipamd is back: %v", err)
			}
			d.requireNoLeases(t)
		})
	}
}
