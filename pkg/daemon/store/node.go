package store

import "time"

// This file: the records of a node's life in the cluster. A node has a
// registration (Node), permanent until the node is removed; while its ipamd
// runs, a liveness record (Alive) under the ipamd's etcd lease; and after a
// removal, a tombstone (Removed) saying when and why, which is what a
// removed ipamd that comes back reads to explain why it lost its blocks.
//
// The node's epoch is the CreateRevision of its registration key: every
// write by which a node takes something (a block, an address, a sticky
// record) is guarded by "the registration still has my epoch", so once a
// removal has deleted the registration no write of the removed incarnation
// can land, however late it arrives.

// Node is a node's registration.
type Node struct {
	Name string `json:"name"`
	// Registered is when this registration (this epoch) was created.
	Registered time.Time `json:"registered"`
	// Started is when the ipamd that last registered or adopted it started.
	Started time.Time `json:"started"`
	// LastSeen is the last heartbeat of the node's ipamd (written about
	// once per lease TTL), for `ipamd nodes` and the dead-node release.
	LastSeen time.Time `json:"lastSeen"`
	// MachineID tells a restart of the same machine (adopt the
	// registration) from another machine using the same node name (refuse).
	MachineID string `json:"machineID,omitempty"`
	// Epoch is the key's CreateRevision (not stored: filled when read).
	Epoch int64 `json:"-"`
}

// Alive says the node's ipamd runs: the key lives under its etcd lease.
type Alive struct {
	Node      string    `json:"node"`
	Epoch     int64     `json:"epoch"`
	Started   time.Time `json:"started"`
	MachineID string    `json:"machineID,omitempty"`
	PID       int       `json:"pid,omitempty"`
}

// Removed is the tombstone of a removed node registration.
type Removed struct {
	Node  string    `json:"node"`
	Epoch int64     `json:"epoch"`
	At    time.Time `json:"at"`
	// Reason says who removed it and why ("ipamd node remove", "dead for
	// 10m0s (--dead-node-grace)").
	Reason string `json:"reason"`
	// Attachments and Blocks count what the removal released.
	Attachments int `json:"attachments"`
	Blocks      int `json:"blocks"`
}

// NodeKey, AliveKey and RemovedKey build the keys of a node's records.
func NodeKey(name string) string { return nodesPrefix + name }

// AliveKey is the key of a node's liveness record.
func AliveKey(name string) string { return alivePrefix + name }

// RemovedKey is the key of a node's tombstone.
func RemovedKey(name string) string { return removedPrefix + name }
