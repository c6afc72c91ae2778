package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/v6cni/v6cni/internal/testutil/etcdtest"
)

const testDUID = "00:04:8a:1c:2e:3f:40:51:62:73:84:95:a6:b7:c8:d9:ea:fb"

func TestValidateSegment(t *testing.T) {
	for _, tt := range []struct {
		seg string
		ok  bool
	}{
		{"rack1-uplink", true},
		{"a", true},
		{strings.Repeat("a", 63), true},
		{"", false},
		{strings.Repeat("a", 64), false},
		{"Rack1", false},
		{"rack_1", false},
		{"rack/1", false},
		{"räck", false},
	} {
		if err := ValidateSegment(tt.seg); (err == nil) != tt.ok {
			t.Errorf("ValidateSegment(%q) = %v, want ok %v", tt.seg, err, tt.ok)
		}
	}
}

func TestPDIdentityValidate(t *testing.T) {
	good := PDIdentity{DUID: testDUID, IAID: 1, SubnetLength: 60, BlockSize: 64}
	for _, tt := range []struct {
		name   string
		mutate func(*PDIdentity)
		ok     bool
	}{
		{"good", func(*PDIdentity) {}, true},
		{"upper-case hex", func(id *PDIdentity) { id.DUID = strings.ToUpper(testDUID) }, true},
		{"blockSize = subnetLength", func(id *PDIdentity) { id.BlockSize = 60 }, true},
		{"no DUID", func(id *PDIdentity) { id.DUID = "" }, false},
		{"short DUID", func(id *PDIdentity) { id.DUID = "00:04" }, false},
		{"DUID not hex", func(id *PDIdentity) { id.DUID = "00:04:zz" }, false},
		{"DUID without colons", func(id *PDIdentity) { id.DUID = "00048a1c2e3f" }, false},
		{"DUID of 131 bytes", func(id *PDIdentity) { id.DUID = strings.Repeat("00:", 130) + "00" }, false},
		{"iaid 0", func(id *PDIdentity) { id.IAID = 0 }, false},
		{"subnetLength 0", func(id *PDIdentity) { id.SubnetLength = 0 }, false},
		{"blockSize < subnetLength", func(id *PDIdentity) { id.BlockSize = 56 }, false},
		{"blockSize 129", func(id *PDIdentity) { id.BlockSize = 129 }, false},
	} {
		id := good
		tt.mutate(&id)
		if err := id.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

// TestCreatePDIdentityRace: ipamds starting together each propose an
// identity; exactly one is stored and every one of them gets it back.
func TestCreatePDIdentityRace(t *testing.T) {
	cli := etcdtest.Client(t)
	s := New(cli)
	ctx := context.Background()
	if id, err := s.PDIdentity(ctx, "rack1"); err != nil || id != nil {
		t.Fatalf("PDIdentity of a new segment = %v, %v; want nil, nil", id, err)
	}
	const n = 8
	got := make([]PDIdentity, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = s.CreatePDIdentity(ctx, "rack1", PDIdentity{
				DUID: fmt.Sprintf("00:04:00:00:00:%02x", i), IAID: 1, SubnetLength: 60, BlockSize: 64})
		}()
	}
	wg.Wait()
	stored, err := s.PDIdentity(ctx, "rack1")
	if err != nil || stored == nil || stored.Created.IsZero() {
		t.Fatalf("PDIdentity = %+v, %v", stored, err)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("candidate %d: %v", i, errs[i])
		}
		if got[i].DUID != stored.DUID || !got[i].Created.Equal(stored.Created) {
			t.Errorf("candidate %d got %+v, stored %+v", i, got[i], *stored)
		}
	}
	// Later, another configuration: the stored identity comes back, for the
	// caller to refuse the mismatch.
	again, err := s.CreatePDIdentity(ctx, "rack1", PDIdentity{DUID: testDUID, IAID: 7, SubnetLength: 56, BlockSize: 64})
	if err != nil || again.DUID != stored.DUID || again.IAID != 1 || again.SubnetLength != 60 {
		t.Fatalf("second create = %+v, %v; want the stored %+v", again, err, *stored)
	}
	// Refused before any write.
	for _, bad := range []struct {
		seg string
		id  PDIdentity
	}{{"Rack1", PDIdentity{DUID: testDUID, IAID: 1, SubnetLength: 64, BlockSize: 64}}, {"rack2", PDIdentity{DUID: testDUID, SubnetLength: 64, BlockSize: 64}}} {
		if _, err := s.CreatePDIdentity(ctx, bad.seg, bad.id); err == nil {
			t.Errorf("CreatePDIdentity(%q, %+v) accepted", bad.seg, bad.id)
		}
	}
	if id, _ := s.PDIdentity(ctx, "rack2"); id != nil {
		t.Errorf("invalid identity stored: %+v", id)
	}
}

// campaign wins the segment's election on a session of its own and
// returns the leader's compare and the session.
func campaign(t *testing.T, cli *clientv3.Client, seg, node string) (clientv3.Cmp, *concurrency.Session, *concurrency.Election) {
	t.Helper()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(60))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	el := concurrency.NewElection(sess, ElectionPrefixPD(seg))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := el.Campaign(ctx, node); err != nil {
		t.Fatalf("%s: campaign: %v", node, err)
	}
	return clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev()), sess, el
}

// TestSaveClusterPDLeader: only the current leader's compare lets a save
// through; a leader whose session (lease) is revoked is refused with
// ErrNotLeader, and so is a fenced store of a node that is gone.
func TestSaveClusterPDLeader(t *testing.T) {
	cli := etcdtest.Client(t)
	s := New(cli)
	ctx := context.Background()
	leaderA, sessA, _ := campaign(t, cli, "rack1", "a")
	if err := s.SaveClusterPD(ctx, "rack1", []byte(`{"leader":"a","n":1}`), leaderA); err != nil {
		t.Fatalf("leader a: %v", err)
	}

	// b campaigns behind a; a's lease is revoked (as when it expires).
	bWon := make(chan clientv3.Cmp, 1)
	go func() {
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(60))
		if err != nil {
			t.Error(err)
			return
		}
		t.Cleanup(func() { sess.Close() })
		el := concurrency.NewElection(sess, ElectionPrefixPD("rack1"))
		if err := el.Campaign(ctx, "b"); err != nil {
			t.Error(err)
			return
		}
		bWon <- clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())
	}()
	waitCandidates(t, cli, "rack1", 2)
	if _, err := cli.Revoke(ctx, sessA.Lease()); err != nil {
		t.Fatal(err)
	}
	var leaderB clientv3.Cmp
	select {
	case leaderB = <-bWon:
	case <-time.After(10 * time.Second):
		t.Fatal("b did not win after a's lease was revoked")
	}
	err := s.SaveClusterPD(ctx, "rack1", []byte(`{"leader":"a","n":2}`), leaderA)
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("stale leader a: %v, want ErrNotLeader", err)
	}
	if err := s.SaveClusterPD(ctx, "rack1", []byte(`{"leader":"b","n":3}`), leaderB); err != nil {
		t.Fatalf("leader b: %v", err)
	}
	raw, rev, err := s.LoadClusterPD(ctx, "rack1")
	if err != nil || string(raw) != `{"leader":"b","n":3}` || rev == 0 {
		t.Fatalf("LoadClusterPD = %s, %d, %v", raw, rev, err)
	}
	// a campaigns again: a new key, a new revision; its old compare stays
	// refused.
	leaderA2 := leadAgain(t, cli, "rack1", "a")
	if err := s.SaveClusterPD(ctx, "rack1", []byte(`{"leader":"a","n":4}`), leaderA); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("a's first term: %v, want ErrNotLeader", err)
	}
	if err := s.SaveClusterPD(ctx, "rack1", []byte(`{"leader":"a","n":5}`), leaderA2); err != nil {
		t.Fatalf("a's second term: %v", err)
	}

	// The node fence is a second, independent guard.
	fenced := s.Fenced("gone", 42)
	err = fenced.SaveClusterPD(ctx, "rack1", []byte(`{"n":6}`), leaderA2)
	if !errors.Is(err, ErrNotLeader) || !errors.Is(err, ErrFenced) {
		t.Fatalf("fenced store of an unregistered node: %v, want ErrNotLeader and ErrFenced", err)
	}
	// Refused before any write: no guard, not JSON, bad segment.
	for _, tc := range []struct {
		seg    string
		raw    string
		leader clientv3.Cmp
	}{{"rack1", `{}`, clientv3.Cmp{}}, {"rack1", `not json`, leaderA2}, {"Rack1", `{}`, leaderA2}} {
		if err := s.SaveClusterPD(ctx, tc.seg, []byte(tc.raw), tc.leader); err == nil {
			t.Errorf("SaveClusterPD(%q, %q) accepted", tc.seg, tc.raw)
		}
	}
	if raw, _, _ := s.LoadClusterPD(ctx, "rack1"); string(raw) != `{"leader":"a","n":5}` {
		t.Fatalf("binding %s after refused saves", raw)
	}
}

// leadAgain revokes the lease of every candidate of seg (the leader's
// included), then campaigns as node: a new term.
func leadAgain(t *testing.T, cli *clientv3.Client, seg, node string) clientv3.Cmp {
	t.Helper()
	ctx := context.Background()
	resp, err := cli.Get(ctx, ElectionPrefixPD(seg)+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if _, err := cli.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil {
			t.Fatal(err)
		}
	}
	leader, _, _ := campaign(t, cli, seg, node)
	return leader
}

// waitCandidates waits until n keys campaign in seg's election.
func waitCandidates(t *testing.T, cli *clientv3.Client, seg string, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := cli.Get(context.Background(), ElectionPrefixPD(seg)+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d candidates in %s, want %d (%v)", resp.Count, seg, n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func nextEvent(t *testing.T, ch <-chan ClusterPDEvent) ClusterPDEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch closed")
		}
		if ev.Err != nil {
			t.Fatalf("watch: %v", ev.Err)
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event")
	}
	return ClusterPDEvent{}
}

// TestWatchClusterPD: a watch from LoadClusterPD's revision delivers every
// later save in order and none before; from a compacted revision it
// delivers the current binding and goes on; it closes when ctx ends.
func TestWatchClusterPD(t *testing.T) {
	cli := etcdtest.Client(t)
	s := New(cli)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leader, _, _ := campaign(t, cli, "rack1", "a")
	save := func(v string) {
		t.Helper()
		if err := s.SaveClusterPD(ctx, "rack1", []byte(v), leader); err != nil {
			t.Fatal(err)
		}
	}
	raw, rev0, err := s.LoadClusterPD(ctx, "rack1")
	if err != nil || raw != nil {
		t.Fatalf("LoadClusterPD of a new segment = %s, %v", raw, err)
	}
	save(`{"n":1}`)
	_, rev1, _ := s.LoadClusterPD(ctx, "rack1")
	save(`{"n":2}`)
	save(`{"n":3}`)

	from0 := s.WatchClusterPD(ctx, "rack1", rev0)
	from1 := s.WatchClusterPD(ctx, "rack1", rev1)
	var revs []int64
	for _, want := range []string{`{"n":1}`, `{"n":2}`, `{"n":3}`} {
		ev := nextEvent(t, from0)
		if string(ev.Raw) != want {
			t.Fatalf("from rev %d: %s, want %s", rev0, ev.Raw, want)
		}
		revs = append(revs, ev.Rev)
	}
	if !slices.IsSorted(revs) || revs[0] <= rev0 {
		t.Fatalf("revisions %v after %d", revs, rev0)
	}
	for _, want := range []string{`{"n":2}`, `{"n":3}`} {
		if ev := nextEvent(t, from1); string(ev.Raw) != want {
			t.Fatalf("from rev %d: %s, want %s", rev1, ev.Raw, want)
		}
	}

	// Compacted history: the current binding, then the next saves.
	if _, err := cli.Compact(ctx, revs[2]); err != nil {
		t.Fatal(err)
	}
	late := s.WatchClusterPD(ctx, "rack1", rev0)
	if ev := nextEvent(t, late); string(ev.Raw) != `{"n":3}` || ev.Rev != revs[2] {
		t.Fatalf("after compaction: %s at %d, want {\"n\":3} at %d", ev.Raw, ev.Rev, revs[2])
	}
	save(`{"n":4}`)
	for _, ch := range []<-chan ClusterPDEvent{late, from0, from1} {
		if ev := nextEvent(t, ch); string(ev.Raw) != `{"n":4}` {
			t.Fatalf("next save: %s", ev.Raw)
		}
	}

	cancel()
	for _, ch := range []<-chan ClusterPDEvent{late, from0, from1} {
		select {
		case _, ok := <-ch:
			if ok {
				t.Fatal("event after cancel")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch not closed after cancel")
		}
	}
}

// TestSnapshotPDClusterKeys: identity, binding and election keys are known
// to Snapshot (never Unknown) and raise no problem in Check or CheckNodes;
// a key of no kind is Unknown, an undecodable identity is Undecodable.
func TestSnapshotPDClusterKeys(t *testing.T) {
	cli := etcdtest.Client(t)
	s := New(cli)
	ctx := context.Background()
	for _, seg := range []string{"rack1", "rack2"} {
		if _, err := s.CreatePDIdentity(ctx, seg, PDIdentity{DUID: testDUID, IAID: 1, SubnetLength: 60, BlockSize: 64}); err != nil {
			t.Fatal(err)
		}
	}
	leader, _, _ := campaign(t, cli, "rack1", "a")
	campaignBehind := func(prefix, node string) {
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(60))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sess.Close() })
		// Proclaim-free candidacy: the key as Campaign writes it, without
		// waiting to lead.
		key := fmt.Sprintf("%s/%x", prefix, sess.Lease())
		if _, err := cli.Put(ctx, key, node, clientv3.WithLease(sess.Lease())); err != nil {
			t.Fatal(err)
		}
	}
	campaignBehind(ElectionPrefixPD("rack1"), "b")
	campaignBehind(Prefix+"election/dead-node-release", "a") // nodes.ElectionPrefix
	if err := s.SaveClusterPD(ctx, "rack1", []byte(`{"clientDUID":"`+testDUID+`","leader":"a"}`), leader); err != nil {
		t.Fatal(err)
	}
	if err := s.PutNetService(ctx, NetService{Network: "n"}); err != nil {
		t.Fatal(err)
	}

	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Unknown) != 0 || len(snap.Undecodable) != 0 {
		t.Fatalf("unknown %v, undecodable %v", snap.Unknown, snap.Undecodable)
	}
	if len(snap.PDClusters) != 2 || snap.PDClusters[0].Segment != "rack1" || snap.PDClusters[0].Identity == nil ||
		snap.PDClusters[0].Identity.DUID != testDUID || snap.PDClusters[0].Binding == nil ||
		snap.PDClusters[1].Segment != "rack2" || snap.PDClusters[1].Binding != nil {
		t.Fatalf("PD clusters %+v", snap.PDClusters)
	}
	elections := map[string][]string{}
	for _, c := range snap.Elections {
		elections[c.Election] = append(elections[c.Election], c.Value)
	}
	if !slices.Equal(elections[ElectionPrefixPD("rack1")], []string{"a", "b"}) || !slices.Equal(elections[Prefix+"election/dead-node-release"], []string{"a"}) {
		t.Fatalf("elections %v", elections)
	}
	if ps := Check(snap); len(ps) != 0 {
		t.Errorf("Check = %v", ps)
	}
	if _, ps := CheckNodes(snap); len(ps) != 0 {
		t.Errorf("CheckNodes = %v", ps)
	}

	// Debris: unknown keys, and a broken identity.
	for k, v := range map[string]string{
		Prefix + "whatever/x":        "{}",
		pdclusterPrefix + "rack1/x":  "{}",
		pdclusterPrefix + "Rack1/id": "{}",
		Prefix + "election":          "x",
		PDIdentityKey("rack3"):       "not json",
	} {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	snap, err = s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(snap.Unknown)
	wantUnknown := []string{Prefix + "election", pdclusterPrefix + "Rack1/id", pdclusterPrefix + "rack1/x", Prefix + "whatever/x"}
	slices.Sort(wantUnknown)
	if !slices.Equal(snap.Unknown, wantUnknown) || !slices.Equal(snap.Undecodable, []string{PDIdentityKey("rack3")}) {
		t.Fatalf("unknown %v (want %v), undecodable %v", snap.Unknown, wantUnknown, snap.Undecodable)
	}
}

// FuzzSnapshotKeys: any key and value under Prefix lands in exactly one
// place of a snapshot, or in none (the known kinds that are not checked),
// and never panics.
func FuzzSnapshotKeys(f *testing.F) {
	f.Add("pdcluster/rack1/identity", `{"duid":"00:01:02","iaid":1,"subnetLength":64,"blockSize":64}`)
	f.Add("pdcluster/rack1/binding", `{}`)
	f.Add("election/pd/rack1/694d7b1c2a", "a")
	f.Add("election/", "")
	f.Add("pdcluster//", "")
	f.Fuzz(func(t *testing.T, rest, val string) {
		snap := &Snapshot{Addrs: map[netip.Addr]AttachmentID{}}
		snap.add([]*mvccpb.KeyValue{{Key: []byte(Prefix + rest), Value: []byte(val)}})
		n := len(snap.Unknown) + len(snap.Undecodable) + len(snap.Elections) + len(snap.PDClusters) + len(snap.PD)
		if n > 2 { // a PD cluster entry may also be undecodable
			t.Fatalf("key %q filed %d times: %+v", rest, n, snap)
		}
	})
}
