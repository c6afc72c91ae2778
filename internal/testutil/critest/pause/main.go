// Command pause is the sandbox process of the pods in v6cni's CRI tests: it
// holds the pod's namespaces and exits on SIGTERM or SIGINT, like
// registry.k8s.io/pause, so the tests need no registry. critest builds it
// statically (CGO_ENABLED=0) into a local OCI image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
