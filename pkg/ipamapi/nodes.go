package ipamapi

import (
	"context"

	"github.com/containernetworking/cni/pkg/types"
)

// The node verbs: `ipamd nodes` and `ipamd node remove`.
const (
	PathNodes      = "/v1/admin/nodes"
	PathNodeRemove = "/v1/admin/node/remove"
)

// The states of a node name, as `ipamd nodes` shows them.
const (
	// NodeAlive: registered, and its ipamd keeps its liveness record (an
	// etcd lease) alive.
	NodeAlive = "alive"
	// NodeDead: registered, but no ipamd keeps it alive: stopped, crashed
	// or cut off from etcd for longer than the lease's TTL.
	NodeDead = "dead"
	// NodeRemoved: not registered; a tombstone says when and why it was
	// removed.
	NodeRemoved = "removed"
	// NodeUnregistered: not registered and no tombstone, yet blocks or
	// attachments name it (written before nodes registered, or a
	// removal's sweep that never ran): `ipamd node remove` releases them.
	NodeUnregistered = "unregistered"
)

// NodeInfo is one node name and what it holds.
type NodeInfo struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// Epoch is the etcd revision that created the node's registration
	// (of the removed registration, for a removed node; 0 if none):
	// every write of the node is guarded by it.
	Epoch       int64 `json:"epoch"`
	Blocks      int   `json:"blocks"`
	Attachments int   `json:"attachments"`
	// LastSeen, Started and Registered are RFC 3339 times ("" if unknown):
	// the node's last heartbeat, when its ipamd started, when this
	// registration was created.
	LastSeen   string `json:"lastSeen,omitempty"`
	Started    string `json:"started,omitempty"`
	Registered string `json:"registered,omitempty"`
	MachineID  string `json:"machineID,omitempty"`
	// Local is true for the node of the ipamd that answered.
	Local bool `json:"local,omitempty"`
	// Removed is the node's tombstone: for a removed node its removal,
	// for a registered one an earlier removal of the same name.
	Removed *NodeTombstone `json:"removed,omitempty"`
}

// NodeTombstone is a node's tombstone.
type NodeTombstone struct {
	Epoch       int64  `json:"epoch"`
	At          string `json:"at"`
	Reason      string `json:"reason"`
	Attachments int    `json:"attachments"`
	Blocks      int    `json:"blocks"`
}

// NodeRemoval is what `ipamd node remove` did.
type NodeRemoval struct {
	Node string `json:"node"`
	// Epoch of the removed registration (0: the name had none).
	Epoch int64 `json:"epoch"`
	// AlreadyRemoved: the registration was gone before this call (At and
	// Reason are the earlier removal's); this call only released what that
	// removal had left, if anything.
	AlreadyRemoved bool `json:"alreadyRemoved,omitempty"`
	// WasAlive: the node's ipamd was alive (--force): it fences itself.
	WasAlive bool   `json:"wasAlive,omitempty"`
	Forced   bool   `json:"forced,omitempty"`
	At       string `json:"at"`
	Reason   string `json:"reason"`
	// Revision is the etcd revision of the transaction that deleted the
	// registration.
	Revision int64 `json:"revision,omitempty"`
	// Attachments and Blocks are what this call released.
	Attachments int `json:"attachments"`
	Blocks      int `json:"blocks"`
	// Took is how long the removal took ("41.2ms"), TookSeconds the same.
	Took        string  `json:"took"`
	TookSeconds float64 `json:"tookSeconds"`
	// Message says all of it in a sentence, for the table output.
	Message string `json:"message"`
}

// Nodes lists every node name the cluster knows, in name order.
func (c *Client) Nodes(ctx context.Context) ([]NodeInfo, error) {
	var out []NodeInfo
	return out, c.call(ctx, PathNodes, struct{}{}, &out)
}

// RemoveNode decommissions a node: see `ipamd node remove`.
func (c *Client) RemoveNode(ctx context.Context, name string, force bool, reason string) (*NodeRemoval, error) {
	if name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "node remove: the node name is empty", "")
	}
	var r NodeRemoval
	if err := c.call(ctx, PathNodeRemove, &AdminRequest{Node: name, Force: force, Reason: reason}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
