// Package wait holds the polling loop of the test labs. What the labs
// wait for (a route in a router's table, an address in a container, a
// BGP session up, pings answered again) happens in other processes and
// namespaces and sends no event to wait on, so they poll.
package wait

import "time"

// Poll calls cond every interval until it returns true or timeout
// passes, and reports whether it returned true. cond is called at least
// once, and once more after the deadline, so a condition that became
// true during the last sleep is seen.
func Poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}
