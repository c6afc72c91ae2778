package vmtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// GuestEnv is set to "1" in the environment of the tests a guest runs:
// InGuest reports it.
const GuestEnv = "V6CNI_VMTEST"

const (
	// configPath is the guest's configuration in the initramfs.
	configPath = "/vmtest/config.json"
	// startMarker is printed by the guest's init when the tests start;
	// exitMarker (followed by the tests' exit status) when they ended.
	startMarker = "V6CNI-VMTEST-START"
	exitMarker  = "V6CNI-VMTEST-EXIT="
)

// guestConfig is what Run tells the guest's init.
type guestConfig struct {
	Args    []string `json:"args"`    // arguments of the test binary
	Modules []string `json:"modules"` // kernel module files, in load order
}

// InGuest reports whether this process is a test run inside a guest booted
// by Run.
func InGuest() bool {
	return os.Getenv(GuestEnv) == "1"
}

// InitIfGuest makes the test binary the init of a guest booted by Run; call
// it first in TestMain. Anywhere else (not PID 1, or no guest
// configuration) it returns at once. As init it never returns: it mounts
// /proc, /sys, /dev, /run and /tmp, loads the kernel modules, brings lo up,
// runs the test binary again as a child with the tests' flags and
// GuestEnv=1, prints the child's exit status after exitMarker on the
// console, and powers the guest off.
func InitIfGuest() {
	if os.Getpid() != 1 {
		return
	}
	if _, err := os.Stat(configPath); err != nil {
		return
	}
	code := guestInit()
	// On a line of its own: the tests' last line may lack a newline.
	fmt.Printf("\n%s%d\n", exitMarker, code)
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Init exiting panics the kernel, which (panic=-1, -no-reboot) ends
	// qemu too: the marker is out already.
	fmt.Fprintf(os.Stderr, "vmtest init: power off: %v\n", err)
	os.Exit(code)
}

// guestInit prepares the guest and runs the tests; it returns their exit
// status (non-zero also when the guest could not be prepared).
func guestInit() int {
	if err := prepareGuest(); err != nil {
		fmt.Fprintf(os.Stderr, "vmtest init: %v\n", err)
		return 125
	}
	b, err := os.ReadFile(configPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmtest init: %v\n", err)
		return 125
	}
	var cfg guestConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "vmtest init: %s: %v\n", configPath, err)
		return 125
	}
	for _, m := range cfg.Modules {
		if err := loadModule(m); err != nil {
			fmt.Fprintf(os.Stderr, "vmtest init: %v\n", err)
			return 125
		}
	}
	uptime, _ := os.ReadFile("/proc/uptime")
	up, _, _ := strings.Cut(string(uptime), " ")
	fmt.Printf("%s kernel uptime %ss, %d modules loaded\n", startMarker, up, len(cfg.Modules))

	cmd := exec.Command("/init", cfg.Args...)
	cmd.Env = []string{GuestEnv + "=1", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TMPDIR=/tmp"}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode()
	}
	fmt.Fprintf(os.Stderr, "vmtest init: run tests: %v\n", err)
	return 126
}

// prepareGuest mounts the pseudo file systems the tests use and brings lo
// up. /var/run is a link to /run (network namespaces are bind-mounted in
// /var/run/netns).
func prepareGuest() error {
	for _, m := range []struct{ fstype, dir string }{
		{"proc", "/proc"},
		{"sysfs", "/sys"},
		{"devtmpfs", "/dev"},
		{"tmpfs", "/run"},
		{"tmpfs", "/tmp"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fstype, m.dir, m.fstype, 0, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dir, err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("look up lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// loadModule loads a kernel module file (finit_module); one already loaded
// is fine.
func loadModule(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", file, err)
	}
	return nil
}
