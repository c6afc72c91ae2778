package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file: the records of cluster delegation (docs/design/
// pd-ha-renumbering.md §2.1). The nodes of one uplink segment share one
// DHCPv6-PD binding; the elected leader of the segment runs the client and
// is the only writer of the binding.
//
//	/v6cni/pdcluster/<segment>/identity   PDIdentity (written once: create-if-absent)
//	/v6cni/pdcluster/<segment>/binding    the PD client's binding (JSON, opaque here), written by the leader only
//	/v6cni/election/pd/<segment>/<lease>  a candidate's node name (concurrency.Election, ElectionPrefixPD)
//
// Not under /v6cni/pd/: a node named "cluster" would collide with
// /v6cni/pd/<node>/<iaid>.

const (
	pdclusterPrefix = Prefix + "pdcluster/"
	electionPrefix  = Prefix + "election/"
)

// ErrNotLeader is returned (wrapped) by SaveClusterPD when its leader
// guard fails: the caller's election key is gone or is not the one it won
// with, so another node leads the segment (or will). A fenced store whose
// node fence failed returns an error wrapping both ErrFenced and
// ErrNotLeader: a node that is no longer registered leads nothing.
var ErrNotLeader = errors.New("not the leader of the segment")

// PDIdentity is what every node of a segment must agree on, written once by
// the first ipamd of the segment: a new DUID means a new prefix, a new
// layout means other blocks, so it is never silently replaced.
type PDIdentity struct {
	// DUID is the client DUID of the segment's IA_PD, colon hex.
	DUID string `json:"duid"`
	// IAID of the segment's IA_PD (never 0: 0 would let each node derive
	// its own).
	IAID uint32 `json:"iaid"`
	// SubnetLength is the length of a network's slice of the delegated
	// prefix; BlockSize what a node claims inside it.
	SubnetLength int       `json:"subnetLength"`
	BlockSize    int       `json:"blockSize"`
	Created      time.Time `json:"created"`
}

// Validate checks the identity's form (not the policy: pdnet's config
// parser bounds the lengths for its use).
func (id PDIdentity) Validate() error {
	if err := validColonHex(id.DUID); err != nil {
		return fmt.Errorf("duid %q: %w", id.DUID, err)
	}
	if id.IAID == 0 {
		return errors.New("iaid 0")
	}
	if id.SubnetLength < 1 || id.SubnetLength > 128 {
		return fmt.Errorf("subnetLength %d out of range 1-128", id.SubnetLength)
	}
	if id.BlockSize < id.SubnetLength || id.BlockSize > 128 {
		return fmt.Errorf("blockSize %d out of range %d-128 (subnetLength-128)", id.BlockSize, id.SubnetLength)
	}
	return nil
}

// validColonHex accepts a DUID as colon hex: 3 to 130 bytes (RFC 8415
// §11.1: type and at most 128 octets), two hex digits each.
func validColonHex(s string) error {
	parts := strings.Split(s, ":")
	if len(parts) < 3 || len(parts) > 130 {
		return fmt.Errorf("%d bytes, want 3-130 in colon hex", len(parts))
	}
	for _, p := range parts {
		if len(p) != 2 {
			return fmt.Errorf("byte %q is not two hex digits", p)
		}
		if _, err := hex.DecodeString(p); err != nil {
			return fmt.Errorf("byte %q is not two hex digits", p)
		}
	}
	return nil
}

// ValidateSegment checks a segment name: 1 to 63 of [a-z0-9-], so it is
// one key element and one label of a metric.
func ValidateSegment(seg string) error {
	if len(seg) < 1 || len(seg) > 63 {
		return fmt.Errorf("segment name %q: want 1-63 characters of [a-z0-9-]", seg)
	}
	for _, c := range seg {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("segment name %q: character %q, want only [a-z0-9-]", seg, c)
		}
	}
	return nil
}

// PDIdentityKey is the key of a segment's identity.
func PDIdentityKey(seg string) string { return pdclusterPrefix + seg + "/identity" }

// ClusterPDKey is the key of a segment's binding.
func ClusterPDKey(seg string) string { return pdclusterPrefix + seg + "/binding" }

// ElectionPrefixPD is the prefix of a segment's election: pass it to
// concurrency.NewElection. Candidates campaign with their node name.
func ElectionPrefixPD(seg string) string { return electionPrefix + "pd/" + seg }

// PDIdentity returns a segment's identity, or nil when none is stored.
func (s *Store) PDIdentity(ctx context.Context, seg string) (*PDIdentity, error) {
	if err := ValidateSegment(seg); err != nil {
		return nil, err
	}
	resp, err := s.cli.Get(ctx, PDIdentityKey(seg))
	if err != nil {
		return nil, fmt.Errorf("read PD identity of segment %s: %w", seg, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return decodeIdentity(seg, resp.Kvs[0].Value)
}

func decodeIdentity(seg string, val []byte) (*PDIdentity, error) {
	var id PDIdentity
	if err := json.Unmarshal(val, &id); err != nil {
		return nil, fmt.Errorf("decode PD identity of segment %s: %w", seg, err)
	}
	return &id, nil
}

// CreatePDIdentity stores id as the segment's identity if it has none, in
// one transaction, and returns the identity that is stored: id (Created
// set to now when zero), or the one an earlier or concurrent ipamd wrote,
// which the caller compares with its configuration. It is not fenced: the
// identity belongs to the segment, not to a node.
func (s *Store) CreatePDIdentity(ctx context.Context, seg string, id PDIdentity) (PDIdentity, error) {
	if err := ValidateSegment(seg); err != nil {
		return PDIdentity{}, err
	}
	if err := id.Validate(); err != nil {
		return PDIdentity{}, fmt.Errorf("PD identity of segment %s: %w", seg, err)
	}
	if id.Created.IsZero() {
		id.Created = time.Now().UTC()
	}
	val, err := json.Marshal(id)
	if err != nil {
		return PDIdentity{}, err
	}
	key := PDIdentityKey(seg)
	txn, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return PDIdentity{}, fmt.Errorf("create PD identity of segment %s: %w", seg, err)
	}
	if txn.Succeeded {
		return id, nil
	}
	kvs := txn.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 { // cannot happen: the compare saw the key in the same revision
		return PDIdentity{}, fmt.Errorf("create PD identity of segment %s: key vanished", seg)
	}
	stored, err := decodeIdentity(seg, kvs[0].Value)
	if err != nil {
		return PDIdentity{}, err
	}
	return *stored, nil
}

// LoadClusterPD returns a segment's binding (nil when none is stored) and
// the revision the read was served at: WatchClusterPD(ctx, seg, rev) then
// delivers every later write, none missed.
func (s *Store) LoadClusterPD(ctx context.Context, seg string) (raw []byte, rev int64, err error) {
	if err := ValidateSegment(seg); err != nil {
		return nil, 0, err
	}
	resp, err := s.cli.Get(ctx, ClusterPDKey(seg))
	if err != nil {
		return nil, 0, fmt.Errorf("load PD binding of segment %s: %w", seg, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, nil
	}
	return resp.Kvs[0].Value, resp.Header.Revision, nil
}

// SaveClusterPD stores a segment's binding (JSON) if leader holds, in one
// transaction; leader is the leader's compare, typically
// clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev()). When
// it fails the error wraps ErrNotLeader. A fenced store also requires its
// node's registration (the error then wraps ErrFenced as well).
func (s *Store) SaveClusterPD(ctx context.Context, seg string, raw []byte, leader clientv3.Cmp) error {
	if err := ValidateSegment(seg); err != nil {
		return err
	}
	if len(leader.KeyBytes()) == 0 {
		// An unguarded write would let a stale leader overwrite the binding.
		return fmt.Errorf("save PD binding of segment %s: no leader guard", seg)
	}
	if !json.Valid(raw) {
		return fmt.Errorf("save PD binding of segment %s: not JSON", seg)
	}
	g := s.guard()
	txn, err := s.cli.Txn(ctx).
		If(g.cmps(leader)...).
		Then(clientv3.OpPut(ClusterPDKey(seg), string(raw))).
		Else(g.elses()...).
		Commit()
	if err != nil {
		return fmt.Errorf("save PD binding of segment %s: %w", seg, err)
	}
	if txn.Succeeded {
		return nil
	}
	if err := g.check(txn); err != nil {
		return fmt.Errorf("save PD binding of segment %s: %w (%w)", seg, ErrNotLeader, err)
	}
	return fmt.Errorf("save PD binding of segment %s: %w (election key %s)", seg, ErrNotLeader, leader.KeyBytes())
}

// ClusterPDEvent is one change of a segment's binding, from
// WatchClusterPD.
type ClusterPDEvent struct {
	// Raw is the binding as written; nil when the key was deleted.
	Raw []byte
	// Rev is the revision of the change.
	Rev int64
	// Err ends the watch (the channel closes after it): etcd refused or
	// closed it for a reason other than the end of ctx.
	Err error
}

// WatchClusterPD delivers the changes of a segment's binding made after
// revision rev (0: after now), in order, until ctx ends; the channel is
// then closed. If etcd compacted the revisions the watch needs, it reads
// the key and delivers its current value (when it changed) before watching
// on: a follower sees the latest binding, perhaps not every intermediate
// one.
func (s *Store) WatchClusterPD(ctx context.Context, seg string, rev int64) <-chan ClusterPDEvent {
	out := make(chan ClusterPDEvent)
	go func() {
		defer close(out)
		send := func(ev ClusterPDEvent) bool {
			select {
			case out <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		}
		if err := ValidateSegment(seg); err != nil {
			send(ClusterPDEvent{Err: err})
			return
		}
		key := ClusterPDKey(seg)
		for ctx.Err() == nil {
			wctx, cancel := context.WithCancel(ctx)
			opts := []clientv3.OpOption{}
			if rev > 0 {
				opts = append(opts, clientv3.WithRev(rev+1))
			}
			var werr error
			for resp := range s.cli.Watch(wctx, key, opts...) {
				if werr = resp.Err(); werr != nil {
					break
				}
				for _, ev := range resp.Events {
					e := ClusterPDEvent{Rev: ev.Kv.ModRevision}
					if ev.Type == mvccpb.PUT {
						e.Raw = ev.Kv.Value
					}
					if !send(e) {
						cancel()
						return
					}
					rev = ev.Kv.ModRevision
				}
			}
			cancel()
			if ctx.Err() != nil {
				return
			}
			if !errors.Is(werr, rpctypes.ErrCompacted) {
				if werr == nil {
					werr = errors.New("watch closed")
				}
				send(ClusterPDEvent{Err: fmt.Errorf("watch PD binding of segment %s: %w", seg, werr)})
				return
			}
			// Compacted: catch up with one read, then watch on from it.
			resp, err := s.cli.Get(ctx, key)
			if err != nil {
				send(ClusterPDEvent{Err: fmt.Errorf("watch PD binding of segment %s: read after compaction: %w", seg, err)})
				return
			}
			switch {
			case len(resp.Kvs) > 0 && resp.Kvs[0].ModRevision > rev:
				if !send(ClusterPDEvent{Raw: resp.Kvs[0].Value, Rev: resp.Kvs[0].ModRevision}) {
					return
				}
			case len(resp.Kvs) == 0:
				// Absent now: say so (harmless if it already was).
				if !send(ClusterPDEvent{Rev: resp.Header.Revision}) {
					return
				}
			}
			rev = resp.Header.Revision
		}
	}()
	return out
}
