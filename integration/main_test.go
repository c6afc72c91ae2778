package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/testbin"
)

// binDir holds bridge-v6, ipam-v6 and ipamd, built once by TestMain.
var binDir string

// repoRoot is the module root, for `go build` and `go list`.
var repoRoot string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests need root: they create network namespaces, bridges and veths "+
			"and start ipamd. Run `sudo make test` (or go test as root).")
		os.Exit(1)
	}
	code, err := runTests(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

// runTests builds the binaries into a temporary directory, runs the tests
// and removes the directory.
func runTests(m *testing.M) (int, error) {
	root, err := findRepoRoot()
	if err != nil {
		return 0, err
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "v6cni-it-bin-")
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

// findRepoRoot returns the directory of the module's go.mod.
func findRepoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the v6cni module")
	}
	return filepath.Dir(gomod), nil
}
