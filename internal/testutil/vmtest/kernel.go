package vmtest

import (
	"fmt"
	"os"
	"path/filepath"
)

// DefaultKernelDir is where scripts/install-deps.sh unpacks the guest
// kernel: <dir>/<version>/ holds the Debian package's files (boot/vmlinuz-…,
// lib/modules/<version>/), and <dir>/current links to the version in use.
// The host's own /boot is never touched.
const DefaultKernelDir = "/var/lib/v6cni-test/vmkernel"

// KernelDirEnv overrides DefaultKernelDir.
const KernelDirEnv = "V6CNI_VMKERNEL_DIR"

// installHint ends every error about a missing guest kernel or qemu.
const installHint = "run scripts/install-deps.sh as root (it downloads the Debian kernel package and installs qemu-system-x86)"

// Kernel is an unpacked guest kernel.
type Kernel struct {
	Version string // e.g. 6.1.0-56-cloud-amd64
	Image   string // the bzImage: boot/vmlinuz-<version>
	Modules string // lib/modules/<version>
}

// FindKernel returns the guest kernel that <dir>/current points to, dir
// being $V6CNI_VMKERNEL_DIR or DefaultKernelDir.
func FindKernel() (*Kernel, error) {
	dir := os.Getenv(KernelDirEnv)
	if dir == "" {
		dir = DefaultKernelDir
	}
	root, err := filepath.EvalSymlinks(filepath.Join(dir, "current"))
	if err != nil {
		return nil, fmt.Errorf("no guest kernel in %s: %w; %s", dir, err, installHint)
	}
	k := &Kernel{Version: filepath.Base(root)}
	k.Image = filepath.Join(root, "boot", "vmlinuz-"+k.Version)
	if _, err := os.Stat(k.Image); err != nil {
		return nil, fmt.Errorf("guest kernel %s: %w; %s", k.Version, err, installHint)
	}
	for _, m := range []string{"lib/modules", "usr/lib/modules"} {
		p := filepath.Join(root, m, k.Version)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			k.Modules = p
			return k, nil
		}
	}
	return nil, fmt.Errorf("guest kernel %s: no lib/modules/%s in %s; %s", k.Version, k.Version, root, installHint)
}
