package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/testutils"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/v6cni/v6cni/internal/testutil/checktest"
	"github.com/v6cni/v6cni/internal/testutil/linktest"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// runCheck runs the ipamd binary's `check` and returns its exit status and
// standard output.
func runCheck(t *testing.T, socket string, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(ipamdBin, append([]string{"check", "--socket", socket}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String() + errOut.String()
	default:
		t.Fatalf("run ipamd check: %v", err)
		return 0, ""
	}
}

// TestCheckCommand: an ipamd in its own network namespace (its "host"),
// with a real bridge carrying its block's gateway and attachments in real
// netns. The clean state checks clean (exit 0); then each kind of problem
// is made for real, found under the right node with exit 1, in the table
// and in JSON, and undone; an ipamd that cannot be reached is exit 2.
func TestCheckCommand(t *testing.T) {
	linktest.RequireRoot(t)
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	host := "v6chk-" + id
	if out, err := exec.Command("ip", "netns", "add", host).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", host, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", host).Run() })
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", host}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip -n %s %s: %v: %s", host, strings.Join(args, " "), err, out)
		}
	}
	sh("link", "set", "lo", "up")
	sh("link", "add", "chkbr0", "type", "bridge")
	sh("link", "set", "chkbr0", "up")

	dir := shortDir(t)
	d := startIpamdIn(t, host, dir, "--gc-interval", "0")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli := ipamapi.NewClient(d.socket)
	etcd, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"unix://" + filepath.Join(dir, "data", "etcd-client.sock")},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()

	const subnet = "2001:db8:7c::/48"
	add := func(cid, netns string) netip.Prefix {
		t.Helper()
		req := addReq("chk", cid, subnet)
		req.Netns = netns
		res, err := cli.Add(ctx, req)
		if err != nil {
			t.Fatalf("ADD %s: %v", cid, err)
		}
		p, _ := netip.AddrFromSlice(res.IPs[0].Address.IP)
		ones, _ := res.IPs[0].Address.Mask.Size()
		return netip.PrefixFrom(p.Unmap(), ones)
	}
	c1 := linktest.NewNS(t)
	a1 := add("c1", c1.Path())
	block := a1.Masked()
	gw := netip.PrefixFrom(block.Addr().Next(), block.Bits())
	sh("addr", "add", gw.String(), "dev", "chkbr0", "nodad")

	decode := func(out string) *ipamapi.Consistency {
		t.Helper()
		var r ipamapi.Consistency
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("check -o json does not decode: %v\n%s", err, out)
		}
		return &r
	}
	if code, out := runCheck(t, d.socket); code != 0 || !strings.Contains(out, "consistent") || !strings.Contains(out, "node test-node: alive, this node") {
		t.Fatalf("clean state: exit %d, want 0:\n%s", code, out)
	}
	code, out := runCheck(t, d.socket, "-o", "json")
	if r := decode(out); code != 0 || len(r.Problems) != 0 || r.Node != "test-node" || len(r.Nodes) != 1 || r.Nodes[0].Attachments != 1 {
		t.Fatalf("clean state: exit %d, %+v", code, r)
	}

	put := func(key string, v any) {
		t.Helper()
		val, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := etcd.Put(ctx, key, string(val)); err != nil {
			t.Fatal(err)
		}
	}
	del := func(key string) {
		t.Helper()
		if _, err := etcd.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	ghostBlock := netip.MustParsePrefix("2001:db8:7c:ff::/64")
	spare := a1.Addr()
	for range 100 {
		spare = spare.Next()
	}
	dupID := store.AttachmentID{Network: "chk", ContainerID: "dup", IfName: "eth0"}
	tests := []struct {
		name       string
		make, undo func(t *testing.T)
		kind, node string
	}{
		{"attachment whose netns is gone",
			func(t *testing.T) {
				gone, err := testutils.NewNS()
				if err != nil {
					t.Fatal(err)
				}
				add("c2", gone.Path())
				gone.Close()
				if err := testutils.UnmountNS(gone); err != nil {
					t.Fatal(err)
				}
			},
			func(t *testing.T) {
				if _, err := cli.Release(ctx, &ipamapi.AdminRequest{Network: "chk", ContainerID: "c2", IfName: "eth0"}); err != nil {
					t.Fatal(err)
				}
			},
			"netns-gone", "test-node"},
		{"block of an unregistered node",
			func(t *testing.T) {
				put(store.BlockKey(ghostBlock), store.Block{CIDR: ghostBlock, Node: "ghost", Network: "chk",
					Subnet: netip.MustParsePrefix(subnet), Source: "pool"})
			},
			func(t *testing.T) { del(store.BlockKey(ghostBlock)) },
			"block-no-node", "ghost"},
		{"address key without a handle",
			func(t *testing.T) {
				put(store.AddrKey(spare), store.AttachmentID{Network: "chk", ContainerID: "nobody", IfName: "eth0"})
			},
			func(t *testing.T) { del(store.AddrKey(spare)) },
			"dangling-addr", "test-node"},
		{"address listed by two attachments",
			func(t *testing.T) {
				put(store.HandleKey(dupID), store.Handle{AttachmentID: dupID, Node: "test-node",
					IPs: []store.IP{{Address: a1, Gateway: gw.Addr(), Block: block}}})
			},
			func(t *testing.T) { del(store.HandleKey(dupID)) },
			"addr-twice", "test-node"},
		{"attachment without an address",
			func(t *testing.T) {
				put(store.HandleKey(dupID), store.Handle{AttachmentID: dupID, Node: "test-node",
					IPs: []store.IP{{Address: netip.PrefixFrom(spare, block.Bits()), Gateway: gw.Addr(), Block: block}}})
			},
			func(t *testing.T) { del(store.HandleKey(dupID)) },
			"addr-not-held", "test-node"},
		{"attachment left by an unfinished removal",
			func(t *testing.T) {
				put(store.RemovedKey("gone"), store.Removed{Node: "gone", At: time.Now(), Reason: "ipamd node remove"})
				put(store.HandleKey(dupID), store.Handle{AttachmentID: dupID, Node: "gone"})
			},
			func(t *testing.T) { del(store.HandleKey(dupID)); del(store.RemovedKey("gone")) },
			"handle-no-node", "gone"},
		{"gateway on a bridge with no block",
			func(t *testing.T) { sh("addr", "add", "2001:db8:7c:ee::1/64", "dev", "chkbr0", "nodad") },
			func(t *testing.T) { sh("addr", "del", "2001:db8:7c:ee::1/64", "dev", "chkbr0") },
			"gateway-no-block", "test-node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.make(t)
			defer tt.undo(t)
			code, out := runCheck(t, d.socket, "-o", "json")
			r := decode(out[:strings.LastIndex(out, "}")+1])
			var got []string
			for _, p := range r.Problems {
				got = append(got, p.Node+" "+p.Kind)
			}
			if code != 1 || !slices.Equal(got, []string{tt.node + " " + tt.kind}) {
				t.Errorf("exit %d, problems %q; want exit 1 and [%q]\n%s", code, got, tt.node+" "+tt.kind, out)
			}
			code, out = runCheck(t, d.socket)
			t.Logf("ipamd check:\n%s", out)
			group := out[strings.Index(out, "node "+tt.node+":"):]
			if code != 1 || !strings.Contains(out, "node "+tt.node+":") || !strings.Contains(group, tt.kind) || !strings.Contains(out, "1 problem(s) on 1 node(s)") {
				t.Errorf("table: exit %d, want 1 and %s under node %s:\n%s", code, tt.kind, tt.node, out)
			}
		})
	}
	checktest.AssertClean(t, cli)

	// A dead node (registered, its ipamd gone) holds its block and
	// attachment: shown, not a problem.
	sleeper, err := store.New(etcd).RegisterNode(ctx, store.Node{Name: "sleeper", MachineID: "elsewhere"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := etcd.Revoke(ctx, sleeper.Lease); err != nil {
		t.Fatal(err)
	}
	sleepBlock := netip.MustParsePrefix("2001:db8:7c:5::/64")
	sleepAddr := sleepBlock.Addr().Next().Next()
	sleepID := store.AttachmentID{Network: "chk", ContainerID: "zzz", IfName: "eth0"}
	put(store.BlockKey(sleepBlock), store.Block{CIDR: sleepBlock, Node: "sleeper", Network: "chk", Subnet: netip.MustParsePrefix(subnet), Source: "pool"})
	put(store.HandleKey(sleepID), store.Handle{AttachmentID: sleepID, Node: "sleeper", Netns: "/var/run/netns/on-another-machine",
		IPs: []store.IP{{Address: netip.PrefixFrom(sleepAddr, 64), Gateway: sleepBlock.Addr().Next(), Block: sleepBlock}}})
	put(store.AddrKey(sleepAddr), sleepID)
	code, out = runCheck(t, d.socket)
	if code != 0 || !strings.Contains(out, "node sleeper: dead") || !strings.Contains(out, "ipamd node remove sleeper") {
		t.Errorf("dead node: exit %d, want 0 and the node shown dead:\n%s", code, out)
	}
	t.Logf("ipamd check with a dead node:\n%s", out)
	if _, err := store.New(etcd).RemoveNode(ctx, "sleeper", "test"); err != nil {
		t.Fatal(err)
	}
	checktest.AssertClean(t, cli)

	if code, out := runCheck(t, filepath.Join(dir, "no.sock")); code != 2 || !strings.Contains(out, "could not run") {
		t.Errorf("check without an ipamd: exit %d, want 2:\n%s", code, out)
	}
}
