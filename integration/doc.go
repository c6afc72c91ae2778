// Package integration holds v6cni's end-to-end tests: they build the plugins
// and ipamd, start ipamd with an embedded etcd, and attach real network
// namespaces through libcni, as a container runtime would. They need root
// (CAP_NET_ADMIN, CAP_SYS_ADMIN) and fail, never skip, without it.
//
// Run them with `make test`, or alone with
//
//	go test -race -count=1 ./integration/
//
// Every test runs once per CNI spec version in cniVersions, as a subtest, and
// uses its own ipamd, network namespaces, bridge name and subnets, all
// removed when it ends.
package integration
