package pdha

import (
	"sync"
	"testing"
	"time"

	"github.com/v6cni/v6cni/internal/testutil/netlab"
)

// TestRestartAll: every ipamd of the segment stops (SIGTERM, all at once)
// and starts again: the new leader Renews the stored binding: the same
// prefix, no Solicit reaches the server, pods keep their addresses.
func TestRestartAll(t *testing.T) {
	t.Parallel()
	for _, kind := range []netlab.DHCPKind{netlab.Kea, netlab.Dhcpd} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			lab := newLab(t, kind, 3)
			ctx := testCtx(t)
			waitBinding(t, ctx, lab)
			pods := addPods(t, ctx, lab)
			_, before := waitSettled(t, ctx, lab)
			p := before.prefix()
			lease := requireOneLease(t, ctx, lab, p, "")
			msgs := messages(t, lab)

			var wg sync.WaitGroup
			errs := make([]error, len(lab.Nodes))
			for i, n := range lab.Nodes {
				wg.Add(1)
				go func() { defer wg.Done(); errs[i] = n.Stop() }()
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			stopped := time.Now()
			w := watch(t, lab)
			for _, n := range lab.Nodes {
				if err := n.Start(); err != nil {
					t.Fatal(err)
				}
			}
			// Renewed: the binding saved with a Reply newer than the
			// last one before the stop.
			var b *binding
			if !netlab.Poll(waitLong, 50*time.Millisecond, func() bool {
				for _, e := range w.since(stopped) {
					if !e.put || e.key != bindingKey {
						continue
					}
					if nb, err := parseBinding(e.value); err == nil && nb.ReplyTime.After(before.ReplyTime) {
						b = nb
						return true
					}
				}
				return false
			}) {
				t.Fatalf("no renewed binding %v after the restart; events: %s", waitLong, w.dump(stopped))
			}
			t.Logf("%s: all stopped → renewed by %s in %v", kind, b.Leader, b.ReplyTime.Sub(stopped).Round(time.Millisecond))
			if b.prefix() != p {
				t.Errorf("after restart: prefix %s, want %s", b.prefix(), p)
			}
			after := messages(t, lab)
			if n := after["solicit"] - msgs["solicit"]; n != 0 {
				t.Errorf("%d Solicit(s) reached the server during the restart, want 0 (messages before %v, after %v)", n, msgs, after)
			}
			t.Logf("PDHA-FIGURES restart-all server=%s nodes=3 solicits=%d messages_before=%v messages_after=%v",
				kind, after["solicit"]-msgs["solicit"], msgs, after)
			requireOneLease(t, ctx, lab, p, lease.Owner())
			if err := lab.Router.WaitEstablished(lab.Nodes, waitLong); err != nil {
				t.Fatal(err)
			}
			requirePodsIntact(t, ctx, lab, pods)
			requireClean(t, lab)
		})
	}
}
