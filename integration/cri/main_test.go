package cri

import (
	"fmt"
	"os"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/critest"
	"github.com/v6cni/v6cni/internal/testutil/testbin"
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
	if err := testbin.Build(dir); err != nil {
		return 0, err
	}
	binDir = dir
	if pauseArchive, err = critest.BuildPauseImage(dir); err != nil {
		return 0, err
	}
	return m.Run(), nil
}
