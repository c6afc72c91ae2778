package cri

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/critest"
)

// binDir holds bridge-v6, ipam-v6, pd-ipam and ipamd, built once by TestMain.
var binDir string

// pauseArchive is the pause image, built once and imported by every containerd.
var pauseArchive string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration/cri tests need root: they run containerd, pods, network namespaces and "+
			"bridges and start ipamd. Run `sudo make test` (or go test as root).")
		os.Exit(1)
	}
	if err := critest.CheckBinaries(); err != nil {
		fmt.Fprintln(os.Stderr, "integration/cri:", err)
		os.Exit(1)
	}
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration/cri:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "v6cni-cri-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	for name, pkg := range map[string]string{
		"bridge-v6": "github.com/v6cni/v6cni/plugins/bridge-v6",
		"ipam-v6":   "github.com/v6cni/v6cni/plugins/ipam-v6",
		"pd-ipam":   "github.com/v6cni/v6cni/plugins/pd-ipam",
		"ipamd":     "github.com/v6cni/v6cni/ipamd",
	} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, name), pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	binDir = dir
	if pauseArchive, err = critest.BuildPauseImage(dir); err != nil {
		return 0, err
	}
	return m.Run(), nil
}
