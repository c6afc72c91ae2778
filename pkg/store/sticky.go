package store

import (
	"context"
	"encoding/json"
	"fmt"
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
}

// holder is the AttachmentID an address of a sticky record is held by.
func (st Sticky) holder() AttachmentID {
	return AttachmentID{Network: st.Network, ContainerID: "sticky:" + st.Pod, IfName: st.IfName}
}

// StickyKey is the key of a pod's sticky record.
func StickyKey(network, pod, ifname string) string {
	return stickyPrefix + network + "/" + pod + "/" + ifname
}

// Stick turns an attachment into a sticky record in one transaction: the
// handle goes, the record appears, and each address passes to the record.
func (s *Store) Stick(ctx context.Context, h Handle, expires time.Time) (Sticky, error) {
	st := Sticky{Network: h.Network, Pod: h.Pod, IfName: h.IfName, Node: h.Node, IPs: h.IPs, Expires: expires}
	val, err := json.Marshal(st)
	if err != nil {
		return st, err
	}
	from, err := json.Marshal(h.AttachmentID)
	if err != nil {
		return st, err
	}
	to, err := json.Marshal(st.holder())
	if err != nil {
		return st, err
	}
	ops := []clientv3.Op{clientv3.OpDelete(HandleKey(h.AttachmentID)), clientv3.OpPut(StickyKey(st.Network, st.Pod, st.IfName), string(val))}
	for _, ip := range h.IPs {
		k := AddrKey(ip.Address.Addr())
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", string(from))},
			[]clientv3.Op{clientv3.OpPut(k, string(to))}, nil))
	}
	if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return st, fmt.Errorf("keep addresses of %s for pod %s: %w", h.AttachmentID, h.Pod, err)
	}
	return st, nil
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
	return &st, nil
}

// Stickies returns every sticky record.
func (s *Store) Stickies(ctx context.Context) ([]Sticky, error) {
	return list[Sticky](ctx, s.cli, stickyPrefix)
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
func (s *Store) ReleaseSticky(ctx context.Context, st Sticky) error {
	from, err := json.Marshal(st.holder())
	if err != nil {
		return err
	}
	ops := []clientv3.Op{clientv3.OpDelete(StickyKey(st.Network, st.Pod, st.IfName))}
	for _, ip := range st.IPs {
		k := AddrKey(ip.Address.Addr())
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", string(from))},
			[]clientv3.Op{clientv3.OpDelete(k)}, nil))
	}
	if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("release sticky addresses of %s: %w", st.Pod, err)
	}
	return nil
}
