package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/v6cni/v6cni/pkg/daemon/nodecheck"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// TestCheckDocumented: README.md's "ipamd check" section explains every
// problem kind and every node state the check reports, and its exit codes.
func TestCheckDocumented(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	i := strings.Index(section, "## ipamd check")
	if i < 0 {
		t.Fatal(`README.md has no "## ipamd check" section`)
	}
	section = section[i+3:]
	if j := strings.Index(section, "\n## "); j >= 0 {
		section = section[:j]
	}
	want := append(append([]string{}, store.ProblemKinds...), nodecheck.ProblemKinds...)
	want = append(want, store.NodeAlive, store.NodeDead, store.NodeRemoved, store.NodeUnregistered)
	for _, k := range want {
		if !strings.Contains(section, "`"+k+"`") {
			t.Errorf("README.md's ipamd check section does not explain `%s`", k)
		}
	}
	for _, s := range []string{"0 when clean", "1 when there are problems", "2 when the check could not run", "-o json"} {
		if !strings.Contains(section, s) {
			t.Errorf("README.md's ipamd check section lacks %q", s)
		}
	}
}

// TestShowCheck: the table groups problems under their node, puts those of
// no node last, and ends with a summary.
func TestShowCheck(t *testing.T) {
	r := &ipamapi.Consistency{
		Revision: 9, Blocks: 2, Node: "a",
		Nodes: []ipamapi.NodeCheck{{Name: "a", State: "alive", Epoch: 3, Blocks: 1}, {Name: "b", State: "dead", Epoch: 5, Note: "no liveness record"}},
		Problems: []ipamapi.Problem{
			{Kind: "undecodable", Key: "/v6cni/handles/x", Msg: "bad"},
			{Kind: "netns-gone", Key: "/v6cni/handles/n/c/eth0", Msg: "gone", Node: "a"},
		},
	}
	var out bytes.Buffer
	if err := showCheck(&out, r); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	order := []string{"node a: alive, this node, epoch 3", "netns-gone", "node b: dead, epoch 5", "(no liveness record)", "ok", "no node:", "undecodable",
		"2 problem(s) on 1 node(s) and 1 of no node: 1 netns-gone, 1 undecodable"}
	rest := got
	for _, s := range order {
		i := strings.Index(rest, s)
		if i < 0 {
			t.Fatalf("table lacks %q (in order):\n%s", s, got)
		}
		rest = rest[i+len(s):]
	}
	out.Reset()
	if err := showCheck(&out, &ipamapi.Consistency{Node: "a"}); err != nil || !strings.Contains(out.String(), "consistent") {
		t.Errorf("empty cluster: %v\n%s", err, out.String())
	}
}
