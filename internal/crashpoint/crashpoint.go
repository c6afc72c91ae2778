// Package crashpoint lets a fault-injection test kill ipamd at a named
// step of a request, deterministically: when the environment variable
// V6CNI_CRASHPOINT names a point ("name", or "name@N" for its N-th hit),
// the process kills itself with SIGKILL when it reaches Hit of that name —
// no deferred function, no etcd close, exactly like kill -9 at that instant.
//
// The variable is read once at start; when it is unset, Hit is one load of
// a string and a comparison. Points in the code (grep crashpoint.Hit):
//
//	add:after-reserve   pkg/daemon/allocator/allocator.go  Add: addresses picked (block claimed), nothing written for them
//	add:after-allocate  pkg/daemon/allocator/allocator.go  Add: address and handle written, no answer sent yet
//	del:after-handle    pkg/daemon/allocator/allocator.go  Del: handle read, nothing released yet
//	pd:before-save      pkg/daemon/pdnet/pdnet.go          a DHCPv6 Reply taken, the binding not yet stored
//	pd:after-save       pkg/daemon/pdnet/pdnet.go          the binding stored, not yet acted on
//
// The PD points are hit on every Reply; "pd:before-save@2" is the first
// renewal's.
package crashpoint

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Env is the environment variable naming the point to crash at.
const Env = "V6CNI_CRASHPOINT"

var (
	armed, nth = parse(os.Getenv(Env))
	hits       atomic.Int64
)

func parse(v string) (string, int64) {
	name, n, ok := strings.Cut(v, "@")
	if !ok {
		return v, 1
	}
	i, err := strconv.ParseInt(n, 10, 64)
	if err != nil || i < 1 {
		return name, 1
	}
	return name, i
}

// Hit kills the process with SIGKILL when name is the armed point and this
// is its armed hit.
func Hit(name string) {
	if armed == "" || armed != name {
		return
	}
	if hits.Add(1) != nth {
		return
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // never return into the step
}
