// Package vmtest runs a package's own tests inside a qemu guest booted with
// a Debian kernel, for tests of kernel features the host's kernel may lack.
//
// Why: the machines v6cni is developed and tested on run a monolithic kernel
// without CONFIG_VLAN_8021Q, so a VLAN filtering bridge (`ip link add br0
// type bridge vlan_filtering 1`) fails there with "operation not
// supported", and bridge-v6's `vlan` option could not be tested at all.
// Debian's kernels build 802.1Q, the bridge and veth as modules; the guest
// boots one and runs the tests there, against a real kernel, instead of
// skipping them.
//
// How:
//
//   - The kernel is Debian's linux-image-<version>-cloud-amd64 package,
//     which scripts/install-deps.sh downloads (apt-get download) and
//     unpacks (dpkg-deb -x) into DefaultKernelDir/<version> with
//     DefaultKernelDir/current pointing to it; it is never installed into
//     the host's /boot. qemu is Debian's qemu-system-x86.
//   - Run builds the calling package's test binary again with
//     CGO_ENABLED=0 (static, so no -race in the guest), and writes an
//     initramfs (cpio newc, written here) holding it as /init, the kernel
//     modules asked for and those they depend on (read from each module's
//     .modinfo, as depmod does), /dev/console and a small JSON
//     configuration.
//   - qemu boots it with the console on the serial port (-nographic,
//     -no-reboot, console=ttyS0). The test binary's TestMain calls
//     InitIfGuest first: as PID 1 it mounts /proc, /sys, /dev, /run and
//     /tmp, loads the modules (finit_module), brings lo up, runs itself
//     again as a child with -test.run <pattern> -test.v and
//     V6CNI_VMTEST=1 (InGuest), prints "V6CNI-VMTEST-EXIT=<status>" and
//     powers the guest off.
//   - Run streams the console into t.Log as it comes, fails the test when
//     the guest's tests fail, when the exit line is missing (a kernel
//     panic, a crash of init) or at the timeout, and kills qemu by its pid
//     whenever it returns; the temporary directory goes with the test.
//   - KVM is used when /dev/kvm opens, else TCG with a longer timeout
//     (never a skip). Some nested hypervisors hand out a /dev/kvm that
//     runs firmware but no Linux kernel: a KVM guest whose kernel prints
//     nothing within 5 s is killed and booted again with TCG, and the rest
//     of the process uses TCG. V6CNI_VMTEST_ACCEL=kvm or tcg forces one.
//
// A test that needs the guest probes the running kernel first and runs
// directly where it can (so it also runs on a host whose kernel has the
// feature), as bridge-v6's TestVLAN does:
//
//	func TestVLAN(t *testing.T) {
//		if !vmtest.InGuest() && !vlanFilteringSupported(t) {
//			vmtest.Run(t, vmtest.Config{Run: "^TestVLAN$", Modules: []string{"bridge", "8021q", "veth"}})
//			return
//		}
//		// the real tests
//	}
//
// Inside the guest there is nothing but the test binary: no shell, no
// ping, no ip. Helpers a test execs must be the test binary itself (see
// bridge-v6's TestMain, which acts as an IPAM plugin or as the plugin
// when exec'd under those names), or host commands named in
// Config.Binaries: each is copied in at its host path with the shared
// libraries ldd lists for it (internal/testutil/upstream's TestVLAN runs
// ip, radvd and keepalived so). Files they read at run time are not
// copied: give them their configuration by path or flag.
package vmtest
