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
//   - renumber_test.go: the server starts delegating from another pool
//     and the cluster's prefix P1 is replaced by P2 under running pods
//     (§3, §5.2 renumber-*, tcp-survives, slaac-renumber).
//     TestRenumberExpiry (dhcpd forgets P1; P1 runs out): in each pod's
//     kernel P2 preferred and P1 deprecated, then only P2; a TCP
//     connection to a host behind the router opened before echoes until
//     P1 goes, new ones leave from P2; the router moves to P2's blocks;
//     CHECK, `ipamd check`, `ipamd pd` (P1 deprecated, P2 current); no
//     Solicit. TestRenumberAbrupt (Kea reloads a new pool: P1 lifetimes
//     0): P2 preferred, P1 gone, pd_renumberings_total{kind="abrupt"}.
//     TestRenumberSLAAC: as Expiry in ipv6Mode slaac (rdisc6 sees P1 with
//     preferred 0 and P2). TestRenumberTakeover: as Expiry with the
//     leader's ipamd killed (-9) and restarted during the overlap. Each
//     logs a line starting "RENUM-FIGURES".
//     Measured (3 runs, -race, 2 shared cores; P1 valid 20 s, T1 3 s):
//     the Reply carrying P2 → every pod holding a preferred P2 address:
//     expiry 36/86/97 ms (6 pods, 2 nodes), abrupt 54/59/75 ms (6 pods),
//     slaac 305/370/1024 ms (4 pods: the RA path; a multicast RA waits
//     until 3 s after the one before, RFC 4861 MIN_DELAY_BETWEEN_RAS,
//     and at T1 3 s each renewal sends one); P1 gone from every
//     pod 16–121 ms after its valid end; the TCP connections' last echo
//     27–190 ms before it (one echo every 200 ms); no Solicit.
//   - Not here yet: the root ula-plus-delegated test (§4; allocator and
//     ipamconf cover it without root).
//
// The tests need root and fail, never skip, without it. Run them with
// `make test`, or alone with
//
//	go test -race -count=1 -v ./integration/pdha/ | grep -E 'PDHA-FIGURES|RENUM-FIGURES|^(---|ok|FAIL)'
package pdha
