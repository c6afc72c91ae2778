package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/internal/testutil/vmtest"
	"github.com/v6cni/v6cni/pkg/link"
)

// TestProviderVLAN: a provider network on VLAN 22 of the node's uplink.
// The plugin creates <master>.22 and enslaves it; the master itself, with
// the node's untagged address, stays as it is. It needs 802.1Q: where the
// running kernel lacks it, the test runs in a vmtest guest (no radvd
// there: the gateway is configured).
func TestProviderVLAN(t *testing.T) {
	linktest.RequireRoot(t)
	if !vmtest.InGuest() && !vlanIfSupported(t) {
		t.Log("this kernel has no 802.1Q: running TestProviderVLAN in a vmtest guest")
		vmtest.Run(t, vmtest.Config{Run: "^TestProviderVLAN$", Modules: vlanModules})
		return
	}
	for _, ver := range []string{"0.3.1", "1.1.0"} {
		t.Run(ver, func(t *testing.T) { testProviderVLAN(t, ver) })
	}
}

// vlanIfSupported reports whether the running kernel can make a VLAN
// interface, trying in a netns of its own.
func vlanIfSupported(t *testing.T) bool {
	t.Helper()
	var supported bool
	linktest.Do(t, linktest.NewNS(t), func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "v6probe0"}, PeerName: "v6probe1"}); err != nil {
			return err
		}
		p, err := netlink.LinkByName("v6probe0")
		if err != nil {
			return err
		}
		err = netlink.LinkAdd(&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "v6probe0.2", ParentIndex: p.Attrs().Index}, VlanId: 2})
		switch {
		case errors.Is(err, unix.EOPNOTSUPP):
			return nil
		case err != nil:
			return fmt.Errorf("probe for 802.1Q: %w", err)
		}
		supported = true
		return nil
	})
	return supported
}

func testProviderVLAN(t *testing.T, ver string) {
	e := setup(t)
	linkSelfAs(t, filepath.Dir(e.log), staticIPAMName)
	link.ProviderLockDir = t.TempDir()
	router := linktest.NewNS(t)
	master := linktest.Name("upl")
	rt := linktest.Name("rt")
	const (
		nodeUntagged   = "2001:db8:21::100"
		routerUntagged = "2001:db8:21::1"
	)
	// The node's eth1: untagged, with the node's address; its peer is
	// the router's port, untagged and VLAN 22.
	linktest.Do(t, e.host, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: master}, PeerName: rt,
			PeerNamespace: netlink.NsFd(int(router.Fd()))}); err != nil {
			return err
		}
		return upWithAddr(master, nodeUntagged+"/64")
	})
	linktest.Do(t, router, func() error {
		if err := upWithAddr(rt, routerUntagged+"/64"); err != nil {
			return err
		}
		p, err := netlink.LinkByName(rt)
		if err != nil {
			return err
		}
		if err := netlink.LinkAdd(&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: rt + ".22", ParentIndex: p.Attrs().Index}, VlanId: 22}); err != nil {
			return err
		}
		return upWithAddr(rt+".22", routerAddr+"/64")
	})

	conf := fmt.Appendf(nil, `{"cniVersion":%q,"name":"v6net","type":"bridge-v6","bridge":%q,"provider":{"master":%q,"vlanId":22,"gateway":%q},"ipam":{"type":%q,"addresses":[{"address":"2001:db8:22::10/64"}]}}`,
		ver, e.bridge, master, routerAddr, staticIPAMName)
	args := e.args("71a0000000000001", conf)
	var raw []byte
	if err := e.inHost(t, func() error {
		var err error
		_, raw, err = testutils.CmdAddWithArgs(args, func() error { return cmdAdd(args) })
		return err
	}); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	uplink := master + ".22"
	linktest.Do(t, e.host, func() error {
		up, err := netlink.LinkByName(uplink)
		if err != nil {
			return fmt.Errorf("uplink %s: %w", uplink, err)
		}
		m, err := netlink.LinkByName(master)
		if err != nil {
			return err
		}
		br, err := netlink.LinkByName(e.bridge)
		if err != nil {
			return err
		}
		if v, ok := up.(*netlink.Vlan); !ok || v.VlanId != 22 || v.ParentIndex != m.Attrs().Index {
			t.Errorf("uplink %s is %+v, want VLAN 22 of %s", uplink, up, master)
		}
		if up.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("uplink %s not a port of bridge %s", uplink, e.bridge)
		}
		if m.Attrs().MasterIndex != 0 || !hasAddr(t, m, nodeUntagged) {
			t.Errorf("master %s changed: master index %d, address %s kept %v", master, m.Attrs().MasterIndex, nodeUntagged, hasAddr(t, m, nodeUntagged))
		}
		return nil
	})
	if err := ping6(e.cont, routerAddr, 10*time.Second); err != nil {
		t.Errorf("container → router on VLAN 22: %v", err)
	}
	if err := ping6(router, nodeUntagged, 10*time.Second); err != nil {
		t.Errorf("router → node's untagged address: %v", err)
	}
	if ver != "0.3.1" {
		args.StdinData = withPrevResult(t, conf, raw)
		if err := e.inHost(t, func() error { return testutils.CmdCheckWithArgs(args, func() error { return cmdCheck(args) }) }); err != nil {
			t.Errorf("CHECK: %v", err)
		}
	}
	if err := e.inHost(t, func() error { return testutils.CmdDelWithArgs(args, func() error { return cmdDel(args) }) }); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	e.noAttachmentLeft(t, "71a0000000000001", "DEL")
}

// upWithAddr sets ifname up with cidr (no DAD, its link-local too).
func upWithAddr(ifname, cidr string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	if _, err := sysctl.Sysctl("net/ipv6/conf/"+ifname+"/accept_dad", "0"); err != nil {
		return err
	}
	if err := addAddr(ifname, cidr); err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}
