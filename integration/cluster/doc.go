// Package cluster holds v6cni's multi-node tests: nodes on one routed
// network (internal/testutil/netlab), each with its own ipamd sharing one
// etcd and announcing its blocks by BGP to a router (BIRD or gobgpd); pods
// on different nodes reach each other through that router, with no NAT and
// no overlay.
//
// The tests need root (network namespaces, veths, bridges) and fail, never
// skip, without it. Run them with `make test`, or alone with
//
//	go test -race -count=1 ./integration/cluster/
package cluster
