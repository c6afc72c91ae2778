package main

import (
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/v6cni/v6cni/pkg/link"
	"github.com/v6cni/v6cni/pkg/macaddr"
)

// TestMACSpoofCheck: with macspoofchk the container reaches its gateway
// with its own MAC, not with another one; DEL removes the check.
func TestMACSpoofCheck(t *testing.T) {
	e := setup(t)
	const containerID = "sp00fchk"
	conf := e.conf("1.1.0", `,"macspoofchk":true`)
	args := e.args(containerID, conf)
	e.mustAdd(t, args)
	hostVeth := link.HostVethName(containerID, "eth0")
	mac := macaddr.Derive("v6net", containerID, "eth0")

	nftList := func() string {
		var out []byte
		_ = e.inHost(t, func() error {
			out, _ = exec.Command("nft", "list", "table", "bridge", link.SpoofTable).CombinedOutput()
			return nil
		})
		return string(out)
	}
	if s := nftList(); !strings.Contains(s, `"`+hostVeth+`" . `+mac.String()) || !strings.Contains(s, "drop") {
		t.Fatalf("nft table bridge %s lacks the check of %s (%s):\n%s", link.SpoofTable, hostVeth, mac, s)
	}

	// ok: the echo must come back (patient: the machine may be busy);
	// else one probe, expected to be lost.
	ping := func(ok bool) error {
		args := []string{"-6", "-c", "1", "-W", "1", gw6}
		if ok {
			args = []string{"-6", "-c", "3", "-i", "0.2", "-w", "10", "-W", "5", gw6}
		}
		var err error
		if nerr := e.cont.Do(func(ns.NetNS) error {
			_, err = exec.Command("ping", args...).CombinedOutput()
			return nil
		}); nerr != nil {
			t.Fatal(nerr)
		}
		return err
	}
	setMAC := func(m net.HardwareAddr) {
		if err := e.cont.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			return netlink.LinkSetHardwareAddr(l, m)
		}); err != nil {
			t.Fatal(err)
		}
	}

	if err := ping(true); err != nil {
		t.Fatalf("ping to the gateway with the container's own MAC: %v", err)
	}
	setMAC(net.HardwareAddr{0x02, 0x5b, 0x00, 0x00, 0x00, 0x01})
	if err := ping(false); err == nil {
		t.Errorf("ping to the gateway with a spoofed source MAC got through")
	}
	setMAC(mac)
	if err := ping(true); err != nil {
		t.Errorf("ping with the container's MAC again: %v", err)
	}

	if err := e.del(t, args); err != nil {
		t.Fatal(err)
	}
	if s := nftList(); strings.Contains(s, hostVeth) {
		t.Errorf("%s still checked after DEL:\n%s", hostVeth, s)
	}
	// Idempotent: a second DEL with nothing left succeeds.
	if err := e.del(t, args); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}
