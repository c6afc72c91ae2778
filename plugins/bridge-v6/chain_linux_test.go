package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"

	"github.com/v6cni/v6cni/pkg/link"
)

// referencePlugins is where Debian's containernetworking-plugins installs
// the reference plugins.
const referencePlugins = "/usr/lib/cni"

// TestChainWithReferencePlugins runs bridge-v6 + portmap + tuning +
// bandwidth + firewall through libcni, as a runtime does, and reaches a
// listener in the container through a port mapped over IPv6.
func TestChainWithReferencePlugins(t *testing.T) {
	e := setup(t)
	for _, p := range []string{"portmap", "tuning", "bandwidth", "firewall"} {
		if _, err := os.Stat(filepath.Join(referencePlugins, p)); err != nil {
			t.Fatalf("reference plugin %s missing (%v): apt-get install containernetworking-plugins", p, err)
		}
	}
	bin := pluginBinary(t)
	// CNI_PATH: bridge-v6 and fake-ipam first, then the reference plugins.
	fakeDir := filepath.Dir(strings.Split(os.Getenv("PATH"), ":")[0] + "/x")
	cniPath := []string{filepath.Dir(bin), fakeDir, referencePlugins}

	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "v6chain",
  "plugins": [
    {"type": "bridge-v6", "bridge": %q, "isDefaultGateway": true, "ipam": {"type": "fake-ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "tuning", "sysctl": {"net.ipv6.conf.eth0.hop_limit": "42"}},
    {"type": "bandwidth", "ingressRate": 100000000, "ingressBurst": 1000000, "egressRate": 100000000, "egressBurst": 1000000},
    {"type": "firewall", "backend": "iptables"}
  ]
}`, e.bridge)
	list, err := libcni.ConfListFromBytes([]byte(conflist))
	if err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(cniPath, t.TempDir(), nil)
	const containerID = "c4a1c4a1c4a1c4a1c4a1c4a1c4a1c4a1c4a1c4a1c4a1c4a1c4a1c4a1c4a1c4a1"
	rt := &libcni.RuntimeConf{
		ContainerID: containerID,
		NetNS:       e.cont.Path(),
		IfName:      "eth0",
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "web-0"}},
		CapabilityArgs: map[string]any{
			"portMappings": []map[string]any{{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}},
		},
	}
	ctx := context.Background()

	if err := e.inHost(t, func() error {
		_, err := cni.AddNetworkList(ctx, list, rt)
		return err
	}); err != nil {
		t.Fatalf("ADD of the chain: %v", err)
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			_ = e.inHost(t, func() error { return cni.DelNetworkList(ctx, list, rt) })
		}
	})

	// tuning ran after bridge-v6 on its interface.
	if err := e.cont.Do(func(ns.NetNS) error {
		if v, err := sysctl.Sysctl("net/ipv6/conf/eth0/hop_limit"); err != nil || v != "42" {
			t.Errorf("tuning: hop_limit = %q (%v), want 42", v, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A listener in the container, reached through the host's mapped port
	// on the host's IPv6 address on the bridge.
	var ln net.Listener
	if err := e.cont.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp6", "[::]:8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "hello from the container\n")
			_ = c.Close()
		}
	}()
	var got string
	if err := e.inHost(t, func() error {
		c, err := net.DialTimeout("tcp6", net.JoinHostPort(gw6, "18080"), 5*time.Second)
		if err != nil {
			return fmt.Errorf("dial the mapped port [%s]:18080: %w", gw6, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	}); err != nil {
		t.Fatalf("portmap over IPv6: %v", err)
	}
	if got != "hello from the container\n" {
		t.Fatalf("through the mapped port got %q", got)
	}

	// CHECK of the chain without portmap: Debian's portmap v1.1.1 fails
	// its own CHECK whatever the main plugin did (it looks for the IPv4
	// DNAT rules in ip6tables, or for IPv4 rules of an IPv6-only
	// attachment). The same network name and IDs use the result libcni
	// cached at ADD as prevResult.
	noPortmap, err := libcni.ConfListFromBytes([]byte(strings.Replace(conflist,
		`{"type": "portmap", "capabilities": {"portMappings": true}},`, "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.inHost(t, func() error { return cni.CheckNetworkList(ctx, noPortmap, rt) }); err != nil {
		t.Errorf("CHECK of the chain: %v", err)
	}
	if err := e.inHost(t, func() error { return cni.DelNetworkList(ctx, list, rt) }); err != nil {
		t.Fatalf("DEL of the chain: %v", err)
	}
	deleted = true
	_ = e.inHost(t, func() error {
		if ok, _ := link.LinkExists(link.HostVethName(containerID, "eth0")); ok {
			t.Error("host veth left after DEL of the chain")
		}
		return nil
	})
}
