package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// quarantinePrefix holds one record per quarantined address.
const quarantinePrefix = Prefix + "quarantine/"

// Quarantined is an address kept out of use after duplicate address
// detection found another host holding it (a provider network, where v6cni
// shares the segment with hosts it does not know): released at the DEL of
// the ADD that failed, it would be handed out again and fail again. The
// record holds the address (its address key names the record's holder)
// until Expires.
type Quarantined struct {
	Network string `json:"network"`
	Node    string `json:"node"`
	// IP is the address, with its block, as the attachment held it.
	IP IP `json:"ip"`
	// Attachment is the attachment whose ADD found the duplicate.
	Attachment AttachmentID `json:"attachment"`
	// Reason says why ("duplicate").
	Reason  string    `json:"reason"`
	Since   time.Time `json:"since"`
	Expires time.Time `json:"expires"`
	// Rev is the record's etcd ModRevision when read (0 if not read).
	Rev int64 `json:"-"`
}

// QuarantineHolder is the ContainerID prefix of a quarantined address's
// holder: `ipamd state` lists the address as held by
// "quarantine:<container ID of the failed ADD>".
const QuarantineHolder = "quarantine:"

// holder is the AttachmentID a quarantined address is held by.
func (q Quarantined) holder() AttachmentID {
	return AttachmentID{Network: q.Network, ContainerID: QuarantineHolder + q.Attachment.ContainerID, IfName: q.Attachment.IfName}
}

// QuarantineKey is the key of an address's quarantine record.
func QuarantineKey(a netip.Addr) string {
	return quarantinePrefix + strings.TrimPrefix(AddrKey(a), addrsPrefix)
}

// Quarantine releases an attachment as Release does, except that the
// addresses in dups (duplicates another host holds) pass to a quarantine
// record each, until expires: one transaction, committed only while the
// handle exists (ErrGone otherwise: a concurrent DEL released it). It
// returns the records written.
func (s *Store) Quarantine(ctx context.Context, h Handle, dups []netip.Addr, reason string, expires time.Time) ([]Quarantined, error) {
	from, err := json.Marshal(h.AttachmentID)
	if err != nil {
		return nil, err
	}
	hkey := HandleKey(h.AttachmentID)
	ops := []clientv3.Op{clientv3.OpDelete(hkey)}
	var recs []Quarantined
	now := time.Now().UTC()
	for _, ip := range h.IPs {
		a := ip.Address.Addr()
		k := AddrKey(a)
		mine := clientv3.Compare(clientv3.Value(k), "=", string(from))
		if !slices.Contains(dups, a) {
			ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{mine}, []clientv3.Op{clientv3.OpDelete(k)}, nil))
			continue
		}
		q := Quarantined{Network: h.Network, Node: h.Node, IP: ip, Attachment: h.AttachmentID, Reason: reason, Since: now, Expires: expires.UTC()}
		val, err := json.Marshal(q)
		if err != nil {
			return nil, err
		}
		to, err := json.Marshal(q.holder())
		if err != nil {
			return nil, err
		}
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{mine},
			[]clientv3.Op{clientv3.OpPut(k, string(to)), clientv3.OpPut(QuarantineKey(a), string(val))}, nil))
		recs = append(recs, q)
	}
	g := s.guard()
	txn, err := s.cli.Txn(ctx).
		If(g.cmps(clientv3.Compare(clientv3.CreateRevision(hkey), ">", 0))...).
		Then(ops...).Else(g.elses()...).Commit()
	if err != nil {
		return nil, fmt.Errorf("quarantine addresses of %s: %w", h.AttachmentID, err)
	}
	if !txn.Succeeded {
		if err := g.check(txn); err != nil {
			return nil, fmt.Errorf("quarantine addresses of %s: %w", h.AttachmentID, err)
		}
		return nil, fmt.Errorf("quarantine addresses of %s: %w", h.AttachmentID, ErrGone)
	}
	return recs, nil
}

// Quarantines returns every quarantine record.
func (s *Store) Quarantines(ctx context.Context) ([]Quarantined, error) {
	resp, err := s.cli.Get(ctx, quarantinePrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", quarantinePrefix, err)
	}
	out := make([]Quarantined, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var q Quarantined
		if err := json.Unmarshal(kv.Value, &q); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		q.Rev = kv.ModRevision
		out = append(out, q)
	}
	return out, nil
}

// ReleaseQuarantine deletes a quarantine record and frees its address (if
// the record still holds it). A record read from etcd (Rev set) is
// released only if unchanged: ErrExists otherwise.
func (s *Store) ReleaseQuarantine(ctx context.Context, q Quarantined) error {
	holder, err := json.Marshal(q.holder())
	if err != nil {
		return err
	}
	a := q.IP.Address.Addr()
	qkey, k := QuarantineKey(a), AddrKey(a)
	var cmps []clientv3.Cmp
	if q.Rev != 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(qkey), "=", q.Rev))
	}
	txn, err := s.cli.Txn(ctx).If(cmps...).Then(
		clientv3.OpDelete(qkey),
		clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", string(holder))}, []clientv3.Op{clientv3.OpDelete(k)}, nil),
	).Commit()
	if err != nil {
		return fmt.Errorf("release quarantined address %s: %w", a, err)
	}
	if !txn.Succeeded {
		return fmt.Errorf("release quarantined address %s: the record changed: %w", a, ErrExists)
	}
	return nil
}
