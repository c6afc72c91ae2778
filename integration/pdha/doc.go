// Package pdha holds the root tests of cluster-mode prefix delegation
// (docs/design/pd-ha-renumbering.md §5.2): several nodes on one uplink
// segment (internal/testutil/netlab with a real Kea or ISC dhcpd on the
// link and BIRD as the router) share one DHCPv6-PD binding; the elected
// leader runs the client and pods on every node take addresses from the
// delegated prefix.
//
//   - takeover_test.go: the leader's ipamd is killed (kill -9) or its
//     node powered off; another node Renews the same prefix (never a
//     Solicit), pods keep their addresses and reachability. The Kea/3-node
//     run repeats 10 kills and logs a line starting "PDHA-FIGURES" with
//     the take-over times and lost pings (grep it in `go test -v` output).
//   - restart_test.go: every ipamd stops and starts again: same prefix, no
//     Solicit.
//   - Renumbering tests (§5.2 renumber-*, tcp-survives, slaac-renumber,
//     ula-plus-delegated) go in renumber_test.go, on the helpers of
//     lab_test.go (newLab, waitBinding, addPods, pinger, the watcher).
//
// The tests need root and fail, never skip, without it. Run them with
// `make test`, or alone with
//
//	go test -race -count=1 -v ./integration/pdha/ | grep -E 'PDHA-FIGURES|^(---|ok|FAIL)'
package pdha
