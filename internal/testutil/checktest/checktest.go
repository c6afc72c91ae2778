// Package checktest lets a test that ends with the cluster in a known
// state assert that `ipamd check` finds it clean. It is for tests only.
package checktest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// AssertClean runs `ipamd check` through the ipamd behind c (the checks of
// the whole key space and that ipamd's node's own) and fails t, listing
// every problem, unless the state is clean.
func AssertClean(t testing.TB, c *ipamapi.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := c.Consistency(ctx)
	if err != nil {
		t.Fatalf("ipamd check could not run: %v", err)
	}
	if len(r.Problems) > 0 {
		var b strings.Builder
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "\n  node %q: %s %s: %s", p.Node, p.Kind, p.Key, p.Msg)
		}
		t.Errorf("ipamd check (on node %s, revision %d): %d problem(s):%s", r.Node, r.Revision, len(r.Problems), b.String())
	}
}

// AssertStoreClean is AssertClean without an ipamd: the checks of the
// whole key space (store.Check, store.CheckNodes) on one snapshot read
// through cli, none of a node's local ones. For tests that write the store
// directly.
func AssertStoreClean(t testing.TB, cli *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snap, err := store.New(cli).Snapshot(ctx)
	if err != nil {
		t.Fatalf("check could not run: %v", err)
	}
	_, nodeProblems := store.CheckNodes(snap)
	if ps := append(store.Check(snap), nodeProblems...); len(ps) > 0 {
		var b strings.Builder
		for _, p := range ps {
			fmt.Fprintf(&b, "\n  node %q: %s", p.Node, p)
		}
		t.Errorf("check at revision %d: %d problem(s):%s", snap.Revision, len(ps), b.String())
	}
}
