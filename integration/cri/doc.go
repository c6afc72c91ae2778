// Package cri holds v6cni's tests through containerd 2's CRI plugin, driven
// by crictl as the kubelet drives it (internal/testutil/critest): pods
// IPv6-only and dual-stack get ipamd's addresses and reach each other, stop
// and remove release them, and an ipamd outage shows in the runtime's
// NetworkReady condition (libcni's STATUS, cniVersion 1.1.0).
//
// The tests need root and containerd, its runc shim and crictl built by
// scripts/install-deps.sh (`make deps`, which `make test` runs first); they
// fail, never skip, without them. Run them alone with
//
//	go test -race -count=1 ./integration/cri/
package cri
