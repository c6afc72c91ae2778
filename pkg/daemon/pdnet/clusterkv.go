package pdnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/v6cni/v6cni/pkg/daemon/dhcp6pd"
	"github.com/v6cni/v6cni/pkg/daemon/store"
)

// Identity is a segment's identity: written once by the first ipamd of
// the segment, then the same for every node (a new DUID means a new
// prefix).
type Identity struct {
	DUID         dhcp6pd.DUID `json:"duid"`
	IAID         uint32       `json:"iaid"`
	SubnetLength int          `json:"subnetLength"`
	BlockSize    int          `json:"blockSize"`
	Created      time.Time    `json:"created"`
}

// errNotLeader is what clusterKV.save returns when the leader guard fails.
var errNotLeader = errors.New("pd: not the segment's leader (leader guard failed)")

// clusterKV is the segment's keys in etcd.
// TODO(i14): replace by the store functions of branch i14-client.
type clusterKV struct{ cli *clientv3.Client }

func identityKey(seg string) string { return store.Prefix + "pdcluster/" + seg + "/identity" }
func bindingKey(seg string) string  { return store.Prefix + "pdcluster/" + seg + "/binding" }

// electionPrefix is the election of a segment's leader.
func electionPrefix(seg string) string { return store.Prefix + "election/pd/" + seg }

func (k clusterKV) identity(ctx context.Context, seg string) (Identity, bool, error) {
	var id Identity
	resp, err := k.cli.Get(ctx, identityKey(seg))
	if err != nil {
		return id, false, fmt.Errorf("read %s: %w", identityKey(seg), err)
	}
	if len(resp.Kvs) == 0 {
		return id, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &id); err != nil {
		return id, false, fmt.Errorf("decode %s: %w", identityKey(seg), err)
	}
	return id, true, nil
}

// createIdentity writes id if the segment has none; created is false when
// another ipamd was first.
func (k clusterKV) createIdentity(ctx context.Context, seg string, id Identity) (created bool, err error) {
	raw, err := json.Marshal(id)
	if err != nil {
		return false, err
	}
	key := identityKey(seg)
	resp, err := k.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, string(raw))).Commit()
	if err != nil {
		return false, fmt.Errorf("create %s: %w", key, err)
	}
	return resp.Succeeded, nil
}

func (k clusterKV) load(ctx context.Context, seg string) ([]byte, int64, error) {
	resp, err := k.cli.Get(ctx, bindingKey(seg))
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", bindingKey(seg), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, nil
	}
	return resp.Kvs[0].Value, resp.Header.Revision, nil
}

func (k clusterKV) save(ctx context.Context, seg string, raw []byte, leader clientv3.Cmp) error {
	resp, err := k.cli.Txn(ctx).If(leader).Then(clientv3.OpPut(bindingKey(seg), string(raw))).Commit()
	if err != nil {
		return fmt.Errorf("write %s: %w", bindingKey(seg), err)
	}
	if !resp.Succeeded {
		return errNotLeader
	}
	return nil
}

func (k clusterKV) watch(ctx context.Context, seg string, rev int64) clientv3.WatchChan {
	return k.cli.Watch(ctx, bindingKey(seg), clientv3.WithRev(rev))
}
