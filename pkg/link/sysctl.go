package link

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Sysctls are named with slashes, not dots: interface names may contain dots
// ("eth0.100") and the sysctl package only leaves names with a slash before
// the first dot alone. They apply to the network namespace of the calling
// thread (/proc/sys/net is per namespace).

// setSysctl writes value to name unless it already holds it: a read is
// cheaper than a write, which on some keys (forwarding) makes the kernel
// walk every interface.
func setSysctl(name, value string) error {
	s := openSysctls()
	defer s.close()
	return s.set(name, value)
}

// sysctls opens keys of the calling thread's network namespace relative to
// /proc/sys/net/<family>, each family's directory opened once. A path
// lookup from /proc/sys costs ~90 µs on a node with 1,000 network
// namespaces, against ~4 µs below the family's directory: every namespace
// has its own "net" and "ipv6" dentries, all of one name under one parent,
// and the kernel compares them one by one (proc_sys_compare). An ADD sets
// about ten keys; unopened, that alone would grow it by ~1 ms per 1,000
// containers on the node. Not safe for concurrent use; bound to the
// namespace the thread was in at the first key of each family.
type sysctls struct {
	dirs map[string]int // family ("ipv6", "ipv4") → directory fd
}

func openSysctls() *sysctls { return &sysctls{dirs: map[string]int{}} }

func (s *sysctls) close() {
	for _, fd := range s.dirs {
		unix.Close(fd)
	}
	clear(s.dirs)
}

// open opens name ("net/ipv6/conf/eth0/accept_ra") with flags, relative to
// its family's directory when name has one.
func (s *sysctls) open(name string, flags int) (int, error) {
	path := "/proc/sys/" + name
	fam, rest, ok := strings.Cut(strings.TrimPrefix(name, "net/"), "/")
	if !ok || !strings.HasPrefix(name, "net/") || rest == "" {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
	dir, ok := s.dirs[fam]
	if !ok {
		var err error
		dir, err = unix.Open("/proc/sys/net/"+fam, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: "/proc/sys/net/" + fam, Err: err}
		}
		s.dirs[fam] = dir
	}
	fd, err := unix.Openat(dir, rest, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

// read returns the value of name, trimmed.
func (s *sysctls) read(name string) (string, error) {
	fd, err := s.open(name, unix.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	var buf [64]byte
	n, err := unix.Read(fd, buf[:])
	if err != nil {
		return "", &fs.PathError{Op: "read", Path: "/proc/sys/" + name, Err: err}
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// write writes value to name, without reading it back.
func (s *sysctls) write(name, value string) error {
	fd, err := s.open(name, unix.O_WRONLY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(value)); err != nil {
		return &fs.PathError{Op: "write", Path: "/proc/sys/" + name, Err: err}
	}
	return nil
}

// set writes value to name unless it already holds it.
func (s *sysctls) set(name, value string) error {
	cur, err := s.read(name)
	if err == nil && cur == value {
		return nil
	}
	if err := s.write(name, value); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// PrepareBridge makes the bridge IPv6-capable (disable_ipv6=0) and stops it
// from accepting router advertisements (accept_ra=0): it is the containers'
// router, and an RA a container sends must never install a route on the
// host. With forward (the bridge is the containers' gateway) it then turns
// IPv6 forwarding on. When forwarding is still off, every interface with
// accept_ra=1 is first moved to accept_ra=2: with forwarding on,
// accept_ra=1 means "ignore RAs", and a host that learns its default route
// by RA would lose it when the route expires. (The bridge's own accept_ra
// is 0 by then.) IPv4 forwarding is EnableIPv4Forwarding, for dual-stack
// networks only.
func PrepareBridge(bridge string, forward bool) error {
	s := openSysctls()
	defer s.close()
	if err := s.set("net/ipv6/conf/"+bridge+"/accept_ra", "0"); err != nil {
		return err
	}
	if err := s.set("net/ipv6/conf/"+bridge+"/disable_ipv6", "0"); err != nil {
		return err
	}
	if !forward {
		return nil
	}
	const all = "net/ipv6/conf/all/forwarding"
	cur, err := s.read(all)
	if err != nil {
		return fmt.Errorf("read sysctl %s: %w", all, err)
	}
	if cur != "0" {
		return nil
	}
	if err := s.keepAcceptingRAs(); err != nil {
		return err
	}
	return s.set(all, "1")
}

// EnableIPv4Forwarding turns IPv4 forwarding on (net.ipv4.ip_forward).
func EnableIPv4Forwarding() error {
	s := openSysctls()
	defer s.close()
	return s.set("net/ipv4/ip_forward", "1")
}

// keepAcceptingRAs sets accept_ra=2 on every interface that has accept_ra=1.
// "all" and "default" are skipped: accept_ra of "all" is not used by the
// kernel, and changing "default" would make every future interface —
// bridges facing containers included — accept RAs while forwarding.
func (s *sysctls) keepAcceptingRAs() error {
	const dir = "/proc/sys/net/ipv6/conf"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if name == "all" || name == "default" {
			continue
		}
		key := "net/ipv6/conf/" + name + "/accept_ra"
		v, err := s.read(key)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // the interface went away since ReadDir
			}
			return fmt.Errorf("read sysctl %s: %w", key, err)
		}
		if v != "1" {
			continue
		}
		if err := s.write(key, "2"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("set sysctl %s=2: %w", key, err)
		}
	}
	return nil
}

// checkContainerSysctls verifies what prepareContainerIface set and a later
// change would break: accept_ra=0 (an RA would add routes behind the
// plugin's back) and IPv6 enabled, when the attachment has IPv6 addresses.
func checkContainerSysctls(ifname string, addrs []netip.Prefix, opts ContainerOptions) error {
	has6 := len(opts.Await) > 0
	for _, a := range addrs {
		has6 = has6 || !a.Addr().Unmap().Is4()
	}
	if !has6 {
		return nil
	}
	acceptRA := "0"
	if opts.AcceptRA {
		acceptRA = "1"
	}
	s := openSysctls()
	defer s.close()
	for _, kv := range [][2]string{{"accept_ra", acceptRA}, {"disable_ipv6", "0"}} {
		key := "net/ipv6/conf/" + ifname + "/" + kv[0]
		v, err := s.read(key)
		if err != nil {
			return fmt.Errorf("read sysctl %s: %w", key, err)
		}
		if v != kv[1] {
			return fmt.Errorf("sysctl %s is %s, want %s", key, v, kv[1])
		}
	}
	return nil
}

// prepareContainerIface sets, through s, the sysctls of the container
// interface before it goes up: no RAs (they would race the routes this
// plugin adds) unless opts.AcceptRA (then accept_ra=1, and with
// opts.Autoconf SLAAC with EUI-64 interface IDs: autoconf=1,
// addr_gen_mode=0), no DAD (IPAM guarantees uniqueness; also skips the
// link-local address's DAD), IPv6 on.
//
// Without IPv6 in the kernel (ipv6.disable=1) the IPv6 keys are missing; that
// only matters when the attachment has IPv6 addresses.
func prepareContainerIface(s *sysctls, ifname string, ipv6 bool, opts ContainerOptions) error {
	acceptDAD, acceptRA, autoconf := "0", "0", "0"
	if opts.DAD {
		acceptDAD = "1"
	}
	if opts.AcceptRA {
		acceptRA = "1"
	}
	if opts.Autoconf {
		autoconf = "1"
	}
	settings := [][2]string{
		{"accept_ra", acceptRA},
		{"accept_dad", acceptDAD},
		{"disable_ipv6", "0"},
	}
	if opts.AcceptRA {
		settings = append(settings, [2]string{"autoconf", autoconf}, [2]string{"addr_gen_mode", "0"})
		if opts.IgnoreRADefaultRoute {
			settings = append(settings, [2]string{"accept_ra_defrtr", "0"})
		}
	}
	if opts.DAD && opts.OptimisticDAD {
		settings = append(settings, [2]string{"optimistic_dad", "1"}, [2]string{"use_optimistic", "1"}, [2]string{"dad_transmits", "1"})
	}
	for _, kv := range settings {
		// A new interface has the defaults, which differ from these: write
		// without reading first. disable_ipv6 is read first: it is
		// normally 0 already.
		key := "net/ipv6/conf/" + ifname + "/" + kv[0]
		if kv[0] == "disable_ipv6" {
			if cur, err := s.read(key); err == nil && cur == kv[1] {
				continue
			}
		}
		if err := s.write(key, kv[1]); err != nil {
			if !ipv6 && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return fmt.Errorf("set sysctl %s=%s: %w", key, kv[1], err)
		}
	}
	if opts.FastNUD && ipv6 {
		for _, kv := range NUDSysctls {
			if err := s.write("net/ipv6/neigh/"+ifname+"/"+kv[0], kv[1]); err != nil {
				return fmt.Errorf("set sysctl net/ipv6/neigh/%s/%s=%s: %w", ifname, kv[0], kv[1], err)
			}
		}
	}
	return nil
}

// enableNotify sets, through s, ndisc_notify=1 (with ipv6) and
// arp_notify=1 (with ipv4) on the container interface, so the kernel
// announces the interface's addresses when its MAC changes later. Set
// once the interface is up, not before: recent kernels also announce at
// link-up when they are set, and that announcement, made before the bridge
// forwards the port, would be lost or duplicate the one the plugin sends
// once it does (AnnounceAddrs) — a flood of every port of the bridge for
// nothing.
func enableNotify(s *sysctls, ifname string, ipv6, ipv4 bool) error {
	var keys []string
	if ipv6 {
		keys = append(keys, "net/ipv6/conf/"+ifname+"/ndisc_notify")
	}
	if ipv4 {
		keys = append(keys, "net/ipv4/conf/"+ifname+"/arp_notify")
	}
	for _, key := range keys {
		if err := s.write(key, "1"); err != nil {
			return fmt.Errorf("set sysctl %s=1: %w", key, err)
		}
	}
	return nil
}
