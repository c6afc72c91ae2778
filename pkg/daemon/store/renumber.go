package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file: renumbering an attachment from a delegated prefix to its
// successor, make-before-break. For a while the handle lists both
// addresses: the old one Deprecated (until ValidUntil), the new one with
// Replaces naming it; both address keys are the attachment's. At the old
// prefix's valid end DropReplaced removes the old entry and key.

// ErrNoAddress says a handle does not list the address a renumbering was
// to replace.
var ErrNoAddress = errors.New("address not in the attachment's handle")

// Successor returns the entry of h that replaces addr, if any.
func (h *Handle) Successor(addr netip.Addr) (IP, bool) {
	for _, ip := range h.IPs {
		if ip.Replaces == addr && addr.IsValid() {
			return ip, true
		}
	}
	return IP{}, false
}

// AddSuccessor renumbers one address of node's attachment id in one
// transaction: the new address key is created (only if absent), and the
// handle marks old Deprecated until validUntil and lists next (Replaces =
// old) right after it. The write compares the handle's revision
// (a DEL or another change makes it read again) and the node's fence.
//
// It is idempotent: a handle that already lists a successor of old is
// returned as it is. A handle that is gone gives (nil, ErrGone); a new
// address held by another attachment an *AddrTakenError.
func (s *Store) AddSuccessor(ctx context.Context, id AttachmentID, node string, old netip.Addr, next IP, validUntil time.Time) (*Handle, error) {
	idval, err := json.Marshal(id)
	if err != nil {
		return nil, err
	}
	hkey, nkey := HandleKey(id), AddrKey(next.Address.Addr())
	for try := 0; try < maxStickTries; try++ {
		resp, err := s.cli.Get(ctx, hkey)
		if err != nil {
			return nil, fmt.Errorf("renumber %s: read handle: %w", id, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, fmt.Errorf("renumber %s: %w", id, ErrGone)
		}
		var h Handle
		if err := json.Unmarshal(resp.Kvs[0].Value, &h); err != nil {
			return nil, fmt.Errorf("renumber %s: decode handle: %w", id, err)
		}
		if h.Node != node {
			return nil, fmt.Errorf("renumber %s: the attachment is node %s's, not %s's", id, h.Node, node)
		}
		if _, ok := h.Successor(old); ok {
			return &h, nil
		}
		i := slices.IndexFunc(h.IPs, func(ip IP) bool { return ip.Address.Addr() == old })
		if i < 0 {
			return nil, fmt.Errorf("renumber %s: %s: %w", id, old, ErrNoAddress)
		}
		h.IPs[i].Deprecated, h.IPs[i].ValidUntil = true, validUntil.UTC()
		next.Replaces, next.Deprecated, next.ValidUntil = old, false, time.Time{}
		// Right after the old entry, not at the end: the entries not
		// deprecated stay in range-set order (a repeated ADD's answer).
		h.IPs = slices.Insert(h.IPs, i+1, next)
		val, err := json.Marshal(h)
		if err != nil {
			return nil, err
		}
		g := s.guard()
		txn, err := s.cli.Txn(ctx).
			If(g.cmps(
				clientv3.Compare(clientv3.ModRevision(hkey), "=", resp.Kvs[0].ModRevision),
				clientv3.Compare(clientv3.CreateRevision(nkey), "=", 0))...).
			Then(clientv3.OpPut(hkey, string(val)), clientv3.OpPut(nkey, string(idval))).
			Else(g.elses(clientv3.OpGet(nkey, clientv3.WithCountOnly()))...).
			Commit()
		if err != nil {
			return nil, fmt.Errorf("renumber %s: %w", id, err)
		}
		if txn.Succeeded {
			return &h, nil
		}
		if err := g.check(txn); err != nil {
			return nil, fmt.Errorf("renumber %s: %w", id, err)
		}
		if txn.Responses[0].GetResponseRange().Count > 0 {
			return nil, &AddrTakenError{Addr: next.Address.Addr()}
		}
		// The handle changed between the read and the write: read again.
	}
	return nil, fmt.Errorf("renumber %s: the handle kept changing", id)
}

// DropReplaced ends the overlap of a renumbered attachment in block (a
// delegated block whose prefix's valid lifetime ended): if every address
// of the handle in block has a successor, those entries and their address
// keys go in one transaction (compare-and-swap on the handle's revision)
// and it reports true. An address without a successor makes it change
// nothing and report false: the caller marks the attachment lost. A handle
// that is gone is done (true).
func (s *Store) DropReplaced(ctx context.Context, id AttachmentID, block netip.Prefix) (bool, error) {
	idval, err := json.Marshal(id)
	if err != nil {
		return false, err
	}
	hkey := HandleKey(id)
	for try := 0; try < maxStickTries; try++ {
		resp, err := s.cli.Get(ctx, hkey)
		if err != nil {
			return false, fmt.Errorf("drop replaced addresses of %s: read handle: %w", id, err)
		}
		if len(resp.Kvs) == 0 {
			return true, nil
		}
		var h Handle
		if err := json.Unmarshal(resp.Kvs[0].Value, &h); err != nil {
			return false, fmt.Errorf("drop replaced addresses of %s: decode handle: %w", id, err)
		}
		var ops []clientv3.Op
		kept := h.IPs[:0:0]
		for _, ip := range h.IPs {
			a := ip.Address.Addr()
			if !block.Contains(a) {
				kept = append(kept, ip)
				continue
			}
			if _, ok := h.Successor(a); !ok {
				return false, nil
			}
			k := AddrKey(a)
			ops = append(ops, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", string(idval))},
				[]clientv3.Op{clientv3.OpDelete(k)}, nil))
		}
		if len(ops) == 0 {
			return true, nil
		}
		h.IPs = kept
		val, err := json.Marshal(h)
		if err != nil {
			return false, err
		}
		ops = append(ops, clientv3.OpPut(hkey, string(val)))
		txn, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(hkey), "=", resp.Kvs[0].ModRevision)).
			Then(ops...).Commit()
		if err != nil {
			return false, fmt.Errorf("drop replaced addresses of %s: %w", id, err)
		}
		if txn.Succeeded {
			return true, nil
		}
	}
	return false, fmt.Errorf("drop replaced addresses of %s: the handle kept changing", id)
}
