// Package linktest builds throw-away L2 labs for tests that need root: a
// "router" network namespace holding a bridge, and "container" namespaces
// attached to it by veth pairs. Nothing is created in the caller's own
// namespace, and everything is removed when the test ends, failed or not.
package linktest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
)

// RequireRoot fails the test (never skips it) when not run as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to build network namespaces; run it with sudo")
	}
}

// RequireCommand fails the test when cmd is not installed, naming the
// Debian package that provides it.
func RequireCommand(t testing.TB, cmd, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(cmd)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %s (scripts/install-deps.sh)", cmd, debianPackage)
	}
	return p
}

// NewNS creates a network namespace, removed at the end of the test.
func NewNS(t testing.TB) ns.NetNS {
	t.Helper()
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		_ = netns.Close()
		_ = testutils.UnmountNS(netns)
	})
	return netns
}

var seq atomic.Uint32

// Name returns an interface name unique in this process run: prefix (≤ 6
// bytes) + pid + a counter.
func Name(prefix string) string {
	return fmt.Sprintf("%s%d%d", prefix, os.Getpid()%100000, seq.Add(1)%1000)
}

// Do runs f in netns, failing the test on error.
func Do(t testing.TB, netns ns.NetNS, f func() error) {
	t.Helper()
	if err := netns.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatal(err)
	}
}

// Bridge creates bridge name in netns, up, with IPv6 on, no DAD on its own
// addresses (its link-local is usable at once), forwarding on (it is the
// router of the lab) and a veth port so that it has carrier, hence a
// link-local address, before any container is attached.
func Bridge(t testing.TB, netns ns.NetNS, name string) *net.Interface {
	t.Helper()
	var ifi *net.Interface
	Do(t, netns, func() error {
		for _, kv := range [][2]string{
			{"net/ipv6/conf/all/forwarding", "1"},
			{"net/ipv6/conf/default/accept_dad", "0"},
		} {
			if _, err := sysctl.Sysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge %s: %w", name, err)
		}
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		for _, kv := range [][2]string{{"accept_dad", "0"}, {"accept_ra", "0"}, {"disable_ipv6", "0"}} {
			if _, err := sysctl.Sysctl("net/ipv6/conf/"+name+"/"+kv[0], kv[1]); err != nil {
				return err
			}
		}
		// A veth pair with both ends up has carrier; one end on the
		// bridge gives the bridge carrier (the dummy module may be
		// missing).
		port := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name + "p", MasterIndex: l.Attrs().Index}, PeerName: name + "q"}
		if err := netlink.LinkAdd(port); err != nil {
			return fmt.Errorf("add carrier port of %s: %w", name, err)
		}
		for _, n := range []string{name + "p", name + "q"} {
			pl, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(pl); err != nil {
				return err
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		ifi, err = net.InterfaceByName(name)
		return err
	})
	return ifi
}

// Attach creates a veth pair: host end (hostName) on the bridge in router,
// container end ifname with mac in cont, IPv6 on, no DAD (its link-local is
// usable at once), both up. Extra sysctls of the container interface
// (name → value under net/ipv6/conf/<ifname>/) are set before link-up.
func Attach(t testing.TB, router ns.NetNS, bridge, hostName string, cont ns.NetNS, ifname string, mac net.HardwareAddr, sysctls map[string]string) {
	t.Helper()
	Do(t, router, func() error {
		br, err := netlink.LinkByName(bridge)
		if err != nil {
			return err
		}
		veth := &netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: hostName, MasterIndex: br.Attrs().Index},
			PeerName:  ifname, PeerHardwareAddr: mac, PeerNamespace: netlink.NsFd(int(cont.Fd())),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s: %w", hostName, err)
		}
		l, err := netlink.LinkByName(hostName)
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	Do(t, cont, func() error {
		settings := map[string]string{"accept_dad": "0", "disable_ipv6": "0"}
		for k, v := range sysctls {
			settings[k] = v
		}
		for k, v := range settings {
			if _, err := sysctl.Sysctl("net/ipv6/conf/"+ifname+"/"+k, v); err != nil {
				return err
			}
		}
		for _, name := range []string{"lo", ifname} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
}

// Go runs f in netns on a goroutine of its own (sockets it opens belong to
// netns) and returns a function that waits for it, reporting its error;
// wait may be called more than once.
func Go(t testing.TB, netns ns.NetNS, f func() error) (wait func() error) {
	t.Helper()
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		runtime.LockOSThread() // ns.Do switches this thread only
		err = netns.Do(func(ns.NetNS) error { return f() })
	}()
	return func() error {
		<-done
		return err
	}
}

// Command is a process running in a network namespace, its output
// captured.
type Command struct {
	Cmd *exec.Cmd
	out *syncBuffer
}

// Output is what the process wrote to stdout and stderr so far.
func (c *Command) Output() string { return c.out.String() }

// Run runs name in netns (through nsenter) and waits for it, at most
// timeout; it returns the combined output and the error.
func Run(t testing.TB, netns ns.NetNS, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns.Path(), "--", name}, args...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s did not finish within %s: %w", name, timeout, ctx.Err())
	}
	return string(out), err
}

// Start starts name in netns (through nsenter); the process is killed, by
// its pid, and reaped when the test ends.
func Start(t testing.TB, netns ns.NetNS, name string, args ...string) *Command {
	t.Helper()
	c := &Command{out: &syncBuffer{}}
	c.Cmd = exec.Command("nsenter", append([]string{"--net=" + netns.Path(), "--", name}, args...)...)
	c.Cmd.Stdout, c.Cmd.Stderr = c.out, c.out
	if err := c.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = c.Cmd.Process.Kill()
		_ = c.Cmd.Wait()
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, c.Output())
		}
	})
	return c
}

// Eventually calls cond until it returns true, at most timeout, checking
// every interval; it fails the test with what (and cond's last message).
func Eventually(t testing.TB, timeout, interval time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, timeout, msg)
		}
		time.Sleep(interval)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Clone(s.b.String())
}
