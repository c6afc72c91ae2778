package provider

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// binDir holds bridge-v6, ipam-v6, pd-ipam and ipamd, built once by TestMain.
var binDir string

// binaries are the commands TestMain builds, by output name.
var binaries = map[string]string{
	"bridge-v6": "./plugins/bridge-v6",
	"ipam-v6":   "./plugins/ipam-v6",
	"pd-ipam":   "./plugins/pd-ipam",
	"ipamd":     "./ipamd",
}

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
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return 0, fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return 0, fmt.Errorf("not inside the v6cni module")
	}
	dir, err := os.MkdirTemp("", "v6cni-prov-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	for name, pkg := range binaries {
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = filepath.Dir(gomod)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	}
	binDir = dir
	return m.Run(), nil
}
