// Package crashpoint lets a fault-injection test kill ipamd at a named
// step of a request, deterministically: when the environment variable
// V6CNI_CRASHPOINT names a point, the process kills itself with SIGKILL the
// first time it reaches Hit of that name — no deferred function, no etcd
// close, exactly like kill -9 at that instant.
//
// The variable is read once at start; when it is unset, Hit is one load of
// a string and a comparison. Points in the code (grep crashpoint.Hit):
//
//	add:after-reserve   pkg/allocator/allocator.go  addresses picked (block claimed), nothing written for them
//	add:after-allocate  pkg/allocator/allocator.go  address and handle written, no answer sent yet
//	del:after-handle    pkg/allocator/allocator.go  handle read, nothing released yet
package crashpoint

import (
	"os"
	"syscall"
)

// Env is the environment variable naming the point to crash at.
const Env = "V6CNI_CRASHPOINT"

var armed = os.Getenv(Env)

// Hit kills the process with SIGKILL when name is the armed point.
func Hit(name string) {
	if armed == "" || armed != name {
		return
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL is not deliverable late; never return into the step.
}
