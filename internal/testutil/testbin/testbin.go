// Package testbin builds v6cni's commands for the tests that exec them
// (as a runtime execs the plugins, and a node runs ipamd).
package testbin

import (
	"fmt"
	"os"
	"os/exec"
)

// Packages are v6cni's commands; each binary is named after the last
// element of its package path (bridge-v6, ipam-v6, pd-ipam, ipamd).
var Packages = []string{
	"github.com/v6cni/v6cni/plugins/bridge-v6",
	"github.com/v6cni/v6cni/plugins/ipam-v6",
	"github.com/v6cni/v6cni/plugins/pd-ipam",
	"github.com/v6cni/v6cni/ipamd",
}

// Build builds Packages into dir in one go build (static, as `make
// build` builds them).
func Build(dir string) error {
	args := append([]string{"build", "-trimpath", "-o", dir + string(os.PathSeparator)}, Packages...)
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %w\n%s", Packages, err, out)
	}
	return nil
}
