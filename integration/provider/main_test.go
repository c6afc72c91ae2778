package provider

import (
	"fmt"
	"os"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/testbin"
)

// binDir holds bridge-v6, ipam-v6, pd-ipam and ipamd, built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration/provider tests need root: they create network namespaces, veths and "+
			"bridges and start radvd, keepalived, Kea and ipamd. Run `sudo make test` (or go test as root).")
		os.Exit(1)
	}
	code, err := runTests(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration/provider:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

// runTests builds the binaries into a temporary directory, runs the tests
// and removes the directory.
func runTests(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "v6cni-prov-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	if err := testbin.Build(dir); err != nil {
		return 0, err
	}
	binDir = dir
	return m.Run(), nil
}
