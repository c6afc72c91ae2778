package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/v6cni/v6cni/pkg/macaddr"
)

// TestEUI64MatchesInterfaceMAC: with addressing eui64, the container's IPv6
// address is the modified EUI-64 of the MAC its interface really has, for
// the derived MAC and for a MAC the runtime asks for (CNI_ARGS MAC=); the
// address works (gateway ping).
func TestEUI64MatchesInterfaceMAC(t *testing.T) {
	forEachVersion(t, func(t *testing.T, ver string) {
		d := startIpamd(t)
		n := newNet(t, d, false)
		n.IPAM["addressing"] = "eui64"
		cni := newCNI(t)
		list := n.confList(t, ver)

		derived := newContainer(t, cni, list)
		asked := newContainer(t, cni, list)
		const askedMAC = "02:00:5e:10:00:2a"
		for _, c := range []*container{derived, asked} {
			rt := c.runtimeConf()
			if c == asked {
				rt.Args = append(rt.Args, [2]string{"MAC", askedMAC})
			}
			res, err := c.cni.AddNetworkList(testCtx(t), c.list, rt)
			if err != nil {
				t.Fatalf("ADD %s: %v", c.ID, err)
			}
			t.Cleanup(func() { c.cni.DelNetworkList(testCtx(t), c.list, rt) })
			raw, _ := json.Marshal(res)
			st, err := linkIn(t, c.NS, "eth0")
			if err != nil {
				t.Fatal(err)
			}
			mac, err := net.ParseMAC(st.MAC)
			if err != nil {
				t.Fatal(err)
			}
			if c == asked && st.MAC != askedMAC {
				t.Errorf("eth0 MAC = %s, want the requested %s", st.MAC, askedMAC)
			}
			if c == derived && st.MAC != macaddr.Derive(n.Name, c.ID, "eth0").String() {
				t.Errorf("eth0 MAC = %s, want the derived one", st.MAC)
			}
			block := netip.PrefixFrom(n.subnet(t, 0).Addr(), 64)
			want := fmt.Sprintf("%s/64", macaddr.EUI64(block, mac))
			if len(st.Addrs) != 1 || st.Addrs[0] != want {
				t.Errorf("eth0 addresses = %v, want the EUI-64 of %s: %s", st.Addrs, mac, want)
			}
			if !strings.Contains(string(raw), strings.TrimSuffix(want, "/64")) {
				t.Errorf("CNI result %s lacks %s", raw, want)
			}
			requirePing(t, c.NS, block.Addr().Next().AsSlice()) // the block's gateway
		}
	})
}

// TestGCVerb drives ipam-v6's GC with CNI 1.1 semantics: without a
// valid-attachments key nothing is released; a partial list releases the
// rest; an empty list releases every attachment of the network.
func TestGCVerb(t *testing.T) {
	d := startIpamd(t)
	n := newNet(t, d, false)
	cni := newCNI(t)
	list := n.confList(t, "1.1.0")
	cs := []*container{newContainer(t, cni, list), newContainer(t, cni, list), newContainer(t, cni, list)}
	for _, c := range cs {
		if _, err := execIPAM(t, n, "1.1.0", "ADD", c); err != nil {
			t.Fatal(err)
		}
	}
	gc := func(valid []*container, withKey bool) {
		t.Helper()
		conf := n.pluginConf()
		conf["cniVersion"], conf["name"] = "1.1.0", n.Name
		if withKey {
			l := []map[string]string{}
			for _, c := range valid {
				l = append(l, map[string]string{"containerID": c.ID, "ifname": "eth0"})
			}
			conf["cni.dev/valid-attachments"] = l
		}
		stdin, _ := json.Marshal(conf)
		r := execPluginRaw(t, "ipam-v6", []string{"CNI_COMMAND=GC", "CNI_PATH=" + binDir}, stdin)
		if r.exitCode != 0 {
			t.Fatalf("GC: exit %d: %s %s", r.exitCode, r.stdout, r.stderr)
		}
	}
	held := func() int { return len(d.leases(t)) }

	gc(nil, false)
	if got := held(); got != 3 {
		t.Fatalf("after GC without a valid list: %d addresses held, want 3", got)
	}
	gc(cs[:1], true)
	if got := d.leasesOf(t, cs[0].ID); held() != 1 || len(got) != 1 {
		t.Fatalf("after GC keeping one: %v", d.leases(t))
	}
	gc(nil, true)
	d.requireNoLeases(t)
}

// TestIPAMPluginLogsErrors: a failed call is reported on stderr and in the
// config's logFile; a successful one writes nothing.
func TestIPAMPluginLogsErrors(t *testing.T) {
	d := startIpamd(t)
	n := newNet(t, d, false)
	logFile := filepath.Join(t.TempDir(), "ipam.log")
	conf := n.pluginConf()
	conf["cniVersion"], conf["name"], conf["logFile"] = "1.1.0", n.Name, logFile
	netns := newNetns(t)
	env := []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=logtest", "CNI_NETNS=" + netns.Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + binDir}

	good, _ := json.Marshal(conf)
	if r := execPluginRaw(t, "ipam-v6", env, good); r.exitCode != 0 || len(r.stderr) != 0 {
		t.Fatalf("successful ADD: exit %d, stdout %s, stderr %q", r.exitCode, r.stdout, r.stderr)
	}
	if _, err := os.Stat(logFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a successful ADD wrote the log file (%v)", err)
	}

	n.IPAM["socket"] = filepath.Join(t.TempDir(), "nobody.sock")
	conf["ipam"] = n.IPAM
	bad, _ := json.Marshal(conf)
	r := execPluginRaw(t, "ipam-v6", env, bad)
	requireExecCNIError(t, r, 11, "nobody.sock")
	logged, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("log file after a failed ADD: %v", err)
	}
	for _, out := range []string{string(r.stderr), string(logged)} {
		if !strings.Contains(out, "ipam-v6 ADD") || !strings.Contains(out, "logtest") || !strings.Contains(out, "nobody.sock") {
			t.Errorf("error report %q lacks the verb, container or cause", out)
		}
	}
}
