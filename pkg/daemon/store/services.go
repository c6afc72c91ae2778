package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file: node services' records — the DHCPv6-PD binding, the
// attachments that lost their delegated prefix, and the settings of the
// router advertisements and DHCPv6 of self-configuring networks.

// markLostHook, if set (tests), runs between MarkLost's read of the handle
// and its transaction: the window a concurrent DEL can fall into.
var markLostHook func()

// MarkLost marks an attachment lost and releases its addresses in block, in
// one transaction; the handle stays so CHECK and STATUS can say so, until
// DEL. The write is a compare-and-swap on the handle's revision: a DEL (or
// any change) between the read and the write makes it read again, and a
// handle that is gone stays gone.
func (s *Store) MarkLost(ctx context.Context, id AttachmentID, block netip.Prefix) error {
	idval, err := json.Marshal(id)
	if err != nil {
		return err
	}
	hkey := HandleKey(id)
	for try := 0; try < maxStickTries; try++ {
		resp, err := s.cli.Get(ctx, hkey)
		if err != nil {
			return fmt.Errorf("mark %s lost: read handle: %w", id, err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		var h Handle
		if err := json.Unmarshal(resp.Kvs[0].Value, &h); err != nil {
			return fmt.Errorf("mark %s lost: decode handle: %w", id, err)
		}
		h.Lost = true
		val, err := json.Marshal(h)
		if err != nil {
			return err
		}
		ops := []clientv3.Op{clientv3.OpPut(hkey, string(val))}
		for _, ip := range h.IPs {
			if !block.Contains(ip.Address.Addr()) {
				continue
			}
			k := AddrKey(ip.Address.Addr())
			ops = append(ops, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", string(idval))},
				[]clientv3.Op{clientv3.OpDelete(k)}, nil))
		}
		if markLostHook != nil {
			markLostHook()
		}
		txn, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(hkey), "=", resp.Kvs[0].ModRevision)).
			Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("mark %s lost: %w", id, err)
		}
		if txn.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("mark %s lost: the handle kept changing", id)
}

// PDKey is the key of a node's DHCPv6-PD binding for one IAID.
func PDKey(node string, iaid uint32) string {
	return fmt.Sprintf("%s%s/%08x", pdPrefix, node, iaid)
}

// SavePD stores a node's PD binding (JSON, the PD client's format), so a
// restarted ipamd renews the same prefix instead of asking for a new one.
func (s *Store) SavePD(ctx context.Context, node string, iaid uint32, binding []byte) error {
	if err := s.guardedPut(ctx, PDKey(node, iaid), string(binding)); err != nil {
		return fmt.Errorf("save PD binding of %s: %w", node, err)
	}
	return nil
}

// LoadPD returns a node's stored PD binding, or nil.
func (s *Store) LoadPD(ctx context.Context, node string, iaid uint32) ([]byte, error) {
	resp, err := s.cli.Get(ctx, PDKey(node, iaid))
	if err != nil {
		return nil, fmt.Errorf("load PD binding of %s: %w", node, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}

// NetService is what ipamd needs to serve router advertisements and DHCPv6
// to a network's self-configuring containers, kept so a restarted ipamd
// serves them again without waiting for an ADD.
type NetService struct {
	Network string   `json:"network"`
	DNS     []string `json:"dns,omitempty"`
	Search  []string `json:"search,omitempty"`
	MTU     int      `json:"mtu,omitempty"`
}

const netsvcPrefix = Prefix + "netsvc/"

// PutNetService stores a network's service settings.
func (s *Store) PutNetService(ctx context.Context, ns NetService) error {
	val, err := json.Marshal(ns)
	if err != nil {
		return err
	}
	if err := s.guardedPut(ctx, netsvcPrefix+ns.Network, string(val)); err != nil {
		return fmt.Errorf("store service settings of %s: %w", ns.Network, err)
	}
	return nil
}

// NetServices returns every network's service settings.
func (s *Store) NetServices(ctx context.Context) ([]NetService, error) {
	return list[NetService](ctx, s.cli, netsvcPrefix)
}
