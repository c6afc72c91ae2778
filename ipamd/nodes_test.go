package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// TestNodesTable: the table's columns, relative last-seen times, the
// notes of the local, removed, re-registered and unregistered nodes.
func TestNodesTable(t *testing.T) {
	now := time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
	ns := []ipamapi.NodeInfo{
		{Name: "a", State: ipamapi.NodeAlive, Epoch: 12, Blocks: 2, Attachments: 110, LastSeen: "2026-12-06T03:59:48Z", Local: true},
		{Name: "b", State: ipamapi.NodeDead, Epoch: 40, Blocks: 1, Attachments: 3, LastSeen: "2026-12-06T03:17:30Z",
			Removed: &ipamapi.NodeTombstone{Epoch: 7, At: "2026-12-01T10:00:00Z", Reason: "old"}},
		{Name: "c", State: ipamapi.NodeRemoved, Epoch: 9, Removed: &ipamapi.NodeTombstone{Epoch: 9, At: "2026-12-06T03:50:00Z", Reason: "ipamd node remove on node a: retired"}},
		{Name: "d", State: ipamapi.NodeUnregistered, Blocks: 1},
		{Name: "e", State: ipamapi.NodeDead, Epoch: 3, LastSeen: "2026-11-01T00:00:00Z"},
	}
	var out bytes.Buffer
	if err := nodesTable(&out, ns, now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	want := [][]string{
		{"NODE", "STATE", "EPOCH", "BLOCKS", "ATTACHMENTS", "LAST-SEEN", "NOTE"},
		{"a", "alive", "12", "2", "110", "12s", "ago", "this", "node"},
		{"b", "dead", "40", "1", "3", "43m0s", "ago", "registered", "again", "after", "a", "removal", "at", "2026-12-01T10:00:00Z"},
		{"c", "removed", "9", "0", "0", "-", "removed", "2026-12-06T03:50:00Z:", "ipamd", "node", "remove", "on", "node", "a:", "retired"},
		{"d", "unregistered", "-", "1", "0", "-", "not", "registered:", "`ipamd", "node", "remove", "d`", "releases", "what", "it", "holds"},
		{"e", "dead", "3", "0", "0", "2026-11-01T00:00:00Z", "-"},
	}
	if len(lines) != len(want) {
		t.Fatalf("table has %d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, l := range lines {
		if got := strings.Fields(l); !slices.Equal(got, want[i]) {
			t.Errorf("line %d = %q, want fields %q", i, l, want[i])
		}
	}
	// The columns line up: every row's STATE starts where the header's does.
	col := strings.Index(lines[0], "STATE")
	for _, l := range lines[1:] {
		if l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("row %q: STATE column not at %d", l, col)
		}
	}
}

// TestSplitArgs: NAME before, between and after the flags.
func TestSplitArgs(t *testing.T) {
	valued := map[string]bool{"socket": true, "o": true, "reason": true}
	for _, tc := range []struct {
		in          []string
		flags, args []string
	}{
		{[]string{"n1"}, nil, []string{"n1"}},
		{[]string{"n1", "--force", "--reason", "retired node", "-o", "json"}, []string{"--force", "--reason", "retired node", "-o", "json"}, []string{"n1"}},
		{[]string{"--socket", "/s", "n1", "--force=true"}, []string{"--socket", "/s", "--force=true"}, []string{"n1"}},
		{[]string{"--reason=x", "n1", "n2"}, []string{"--reason=x"}, []string{"n1", "n2"}},
		{[]string{"--force", "--", "-odd"}, []string{"--force"}, []string{"-odd"}},
		{[]string{"--reason"}, []string{"--reason"}, nil}, // flag reports the missing value
	} {
		flags, args := splitArgs(tc.in, valued)
		if !slices.Equal(flags, tc.flags) || !slices.Equal(args, tc.args) {
			t.Errorf("splitArgs(%q) = %q, %q; want %q, %q", tc.in, flags, args, tc.flags, tc.args)
		}
	}
}

// TestNodeCommandUsage: the errors of a malformed node command name what
// is wrong, before any call to ipamd.
func TestNodeCommandUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"node"}, "node: missing subcommand"},
		{[]string{"node", "delete", "x"}, `node: unknown subcommand "delete" (want remove)`},
		{[]string{"node", "remove"}, "node remove: NAME missing"},
		{[]string{"node", "remove", "a", "b"}, "node remove: one NAME, got 2 (a b)"},
		{[]string{"node", "remove", "a", "-o", "yaml"}, `-o: "yaml" is neither table nor json`},
	} {
		var out, errOut bytes.Buffer
		err := run(tc.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ipamd %s: %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

// TestCLINodes drives `ipamd nodes` and `ipamd node remove` against a real
// ipamd, with a second node (dead, one block) registered in its etcd.
func TestCLINodes(t *testing.T) {
	dir := shortDir(t)
	d := startIpamd(t, dir, "--gc-interval", "0")
	ctx := context.Background()
	if _, err := ipamapi.NewClient(d.socket).Add(ctx, addReq("cli", "c1", "2001:db8:7a::/48")); err != nil {
		t.Fatal(err)
	}
	etcd, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"unix://" + filepath.Join(dir, "data", "etcd-client.sock")},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	st := store.New(etcd)
	reg, err := st.RegisterNode(ctx, store.Node{Name: "gone-node", MachineID: "m-gone"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Revoke(ctx, reg.Lease); err != nil {
		t.Fatal(err)
	}
	blk := store.Block{CIDR: netip.MustParsePrefix("2001:db8:7a:ff::/64"), Node: "gone-node", Network: "cli",
		Subnet: netip.MustParsePrefix("2001:db8:7a::/48"), Source: "pool", Claimed: time.Now().UTC()}
	if err := st.Fenced("gone-node", reg.Node.Epoch).ClaimBlock(ctx, blk); err != nil {
		t.Fatal(err)
	}

	runCLI := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(append(args, "--socket", d.socket), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	out, err := runCLI("nodes")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "NODE ") || !regexpLine(out, "test-node", "this node") || !regexpLine(out, "gone-node", "dead", "1", "0") {
		t.Errorf("nodes =\n%s", out)
	}
	out, err = runCLI("nodes", "-o", "json")
	var ns []ipamapi.NodeInfo
	if err != nil || json.Unmarshal([]byte(out), &ns) != nil || len(ns) != 2 || ns[0].Name != "gone-node" || ns[0].Epoch != reg.Node.Epoch ||
		ns[1].Name != "test-node" || !ns[1].Local || ns[1].Attachments != 1 {
		t.Errorf("nodes -o json = %v\n%s", err, out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"node", "remove", "ghost"}, "no node ghost"},
		{[]string{"node", "remove", "test-node"}, "--force"},
	} {
		if out, err := runCLI(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ipamd %s: %v (%s), want an error saying %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
	out, err = runCLI("node", "remove", "gone-node", "--reason", "retired")
	if err != nil || !strings.Contains(out, "node gone-node (epoch") || !strings.Contains(out, "released 0 attachment(s) and 1 block(s)") {
		t.Errorf("node remove gone-node = %v\n%s", err, out)
	}
	out, err = runCLI("node", "remove", "-o", "json", "gone-node")
	var rm ipamapi.NodeRemoval
	if err != nil || json.Unmarshal([]byte(out), &rm) != nil || !rm.AlreadyRemoved || rm.Reason != "ipamd node remove on node test-node: retired" {
		t.Errorf("second node remove = %v\n%s", err, out)
	}
	if out, err := runCLI("check"); err != nil {
		t.Errorf("check after the removal: %v\n%s", err, out)
	}
}

// regexpLine reports whether a line of out holds all the words, in order.
func regexpLine(out string, words ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		rest, ok := l, true
		for _, w := range words {
			i := strings.Index(rest, w)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(w):]
		}
		if ok {
			return true
		}
	}
	return false
}
