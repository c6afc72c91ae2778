package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Sticky is a pod's addresses kept after its DEL, until Expires, for the
// next ADD of the same pod name and interface.
type Sticky struct {
	Network string    `json:"network"`
	Pod     string    `json:"pod"`
	IfName  string    `json:"ifName"`
	Node    string    `json:"node"`
	IPs     []IP      `json:"ips"`
	Expires time.Time `json:"expires"`
	// Rev is the record's etcd ModRevision when read (0 if not read from
	// etcd): ReleaseSticky deletes only the record it was given.
	Rev int64 `json:"-"`
}

// holder is the AttachmentID an address of a sticky record is held by.
func (st Sticky) holder() AttachmentID {
	return AttachmentID{Network: st.Network, ContainerID: "sticky:" + st.Pod, IfName: st.IfName}
}

// StickyKey is the key of a pod's sticky record.
func StickyKey(network, pod, ifname string) string {
	return stickyPrefix + network + "/" + pod + "/" + ifname
}

// ErrGone says the handle a transaction was to change is gone: a concurrent
// DEL released it.
var ErrGone = errors.New("attachment gone")

// maxStickTries bounds the retries of Stick when another writer changes
// the pod's sticky record between its read and its transaction.
const maxStickTries = 8

// Stick turns an attachment into a sticky record in one transaction: the
// handle goes, the record appears, and each address passes to the record.
//
// A pod has one sticky record per interface: the most recent addresses are
// the ones kept. A record already there (an earlier attachment of the pod,
// on this node or another) is replaced, and the addresses it still holds
// are released in the same transaction, so none stays held by a record that
// no longer lists it. The transaction commits only if the record is still
// the one read (its revision) and the handle still exists; replaced returns
// the record that was released, if any, so the caller can forget its
// addresses.
func (s *Store) Stick(ctx context.Context, h Handle, expires time.Time) (st Sticky, replaced *Sticky, err error) {
	st = Sticky{Network: h.Network, Pod: h.Pod, IfName: h.IfName, Node: h.Node, IPs: h.IPs, Expires: expires}
	val, err := json.Marshal(st)
	if err != nil {
		return st, nil, err
	}
	from, err := json.Marshal(h.AttachmentID)
	if err != nil {
		return st, nil, err
	}
	to, err := json.Marshal(st.holder())
	if err != nil {
		return st, nil, err
	}
	skey, hkey := StickyKey(st.Network, st.Pod, st.IfName), HandleKey(h.AttachmentID)
	kept := make(map[netip.Addr]bool, len(h.IPs))
	for _, ip := range h.IPs {
		kept[ip.Address.Addr()] = true
	}
	for try := 0; try < maxStickTries; try++ {
		old, err := s.StickyFor(ctx, st.Network, st.Pod, st.IfName)
		if err != nil {
			return st, nil, err
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(hkey), ">", 0)}
		if old == nil {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(skey), "=", 0))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(skey), "=", old.Rev))
		}
		ops := []clientv3.Op{clientv3.OpDelete(hkey), clientv3.OpPut(skey, string(val))}
		if old != nil {
			// The old record's holder is the same key as the new one's: an
			// address only the old record lists is released here, or it
			// would stay held with no record naming it.
			for _, ip := range old.IPs {
				if kept[ip.Address.Addr()] {
					continue
				}
				k := AddrKey(ip.Address.Addr())
				ops = append(ops, clientv3.OpTxn(
					[]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", string(to))},
					[]clientv3.Op{clientv3.OpDelete(k)}, nil))
			}
		}
		for _, ip := range h.IPs {
			k := AddrKey(ip.Address.Addr())
			ops = append(ops, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", string(from))},
				[]clientv3.Op{clientv3.OpPut(k, string(to))}, nil))
		}
		g := s.guard()
		txn, err := s.cli.Txn(ctx).If(g.cmps(cmps...)...).Then(ops...).Else(g.elses()...).Commit()
		if err != nil {
			return st, nil, fmt.Errorf("keep addresses of %s for pod %s: %w", h.AttachmentID, h.Pod, err)
		}
		if txn.Succeeded {
			return st, old, nil
		}
		if err := g.check(txn); err != nil {
			return st, nil, fmt.Errorf("keep addresses of %s for pod %s: %w", h.AttachmentID, h.Pod, err)
		}
		// The record changed, or the handle is gone (a concurrent DEL
		// released it: nothing left to keep).
		cur, err := s.Handle(ctx, h.AttachmentID)
		if err != nil {
			return st, nil, err
		}
		if cur == nil {
			return st, nil, fmt.Errorf("keep addresses of %s for pod %s: %w", h.AttachmentID, h.Pod, ErrGone)
		}
	}
	return st, nil, fmt.Errorf("keep addresses of %s for pod %s: the sticky record kept changing", h.AttachmentID, h.Pod)
}

// StickyFor returns the sticky record of a pod's interface, or nil.
func (s *Store) StickyFor(ctx context.Context, network, pod, ifname string) (*Sticky, error) {
	resp, err := s.cli.Get(ctx, StickyKey(network, pod, ifname))
	if err != nil {
		return nil, fmt.Errorf("read sticky addresses of %s: %w", pod, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var st Sticky
	if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
		return nil, fmt.Errorf("decode sticky addresses of %s: %w", pod, err)
	}
	st.Rev = resp.Kvs[0].ModRevision
	return &st, nil
}

// Stickies returns every sticky record.
func (s *Store) Stickies(ctx context.Context) ([]Sticky, error) {
	resp, err := s.cli.Get(ctx, stickyPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stickyPrefix, err)
	}
	out := make([]Sticky, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var st Sticky
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		st.Rev = kv.ModRevision
		out = append(out, st)
	}
	return out, nil
}

// Unstick gives a sticky record's addresses to a new handle in one
// transaction; ErrExists if the record is gone or an address moved.
func (s *Store) Unstick(ctx context.Context, st Sticky, h Handle) error {
	hval, err := json.Marshal(h)
	if err != nil {
		return err
	}
	from, err := json.Marshal(st.holder())
	if err != nil {
		return err
	}
	to, err := json.Marshal(h.AttachmentID)
	if err != nil {
		return err
	}
	skey, hkey := StickyKey(st.Network, st.Pod, st.IfName), HandleKey(h.AttachmentID)
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(skey), ">", 0),
		clientv3.Compare(clientv3.CreateRevision(hkey), "=", 0),
	}
	ops := []clientv3.Op{clientv3.OpDelete(skey), clientv3.OpPut(hkey, string(hval))}
	for _, ip := range st.IPs {
		k := AddrKey(ip.Address.Addr())
		cmps = append(cmps, clientv3.Compare(clientv3.Value(k), "=", string(from)))
		ops = append(ops, clientv3.OpPut(k, string(to)))
	}
	txn, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("give sticky addresses of %s to %s: %w", st.Pod, h.AttachmentID, err)
	}
	if !txn.Succeeded {
		return fmt.Errorf("give sticky addresses of %s to %s: %w", st.Pod, h.AttachmentID, ErrExists)
	}
	return nil
}

// ReleaseSticky deletes a sticky record and the addresses it still holds.
// A record read from etcd (Rev set) is released only if it is still the
// current one: ErrExists if it was replaced meanwhile (its replacement
// released its addresses, and the new record's are not this caller's).
func (s *Store) ReleaseSticky(ctx context.Context, st Sticky) error {
	from, err := json.Marshal(st.holder())
	if err != nil {
		return err
	}
	skey := StickyKey(st.Network, st.Pod, st.IfName)
	var cmps []clientv3.Cmp
	if st.Rev != 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(skey), "=", st.Rev))
	}
	ops := []clientv3.Op{clientv3.OpDelete(skey)}
	for _, ip := range st.IPs {
		k := AddrKey(ip.Address.Addr())
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", string(from))},
			[]clientv3.Op{clientv3.OpDelete(k)}, nil))
	}
	txn, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("release sticky addresses of %s: %w", st.Pod, err)
	}
	if !txn.Succeeded {
		return fmt.Errorf("release sticky addresses of %s: the record changed: %w", st.Pod, ErrExists)
	}
	return nil
}
