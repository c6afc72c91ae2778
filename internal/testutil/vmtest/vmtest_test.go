package vmtest

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestMain(m *testing.M) {
	InitIfGuest()
	os.Exit(m.Run())
}

func TestScanConsole(t *testing.T) {
	console := "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r\n" +
		"\x1bc\x1b[?7l\x1b[2J[    0.000000] Linux version 6.1.0-56-cloud-amd64\r\n" +
		startMarker + " kernel uptime 0.91s\r\n=== RUN   TestX\r\n--- PASS: TestX (0.00s)\r\nPASS" +
		"\r\n" + exitMarker + "0\r\n[    2.1] reboot: Power down\r\n"
	var lines []string
	var events []consoleEvent
	code, finished := scanConsole(strings.NewReader(console), func(l string) { lines = append(lines, l) }, func(e consoleEvent) { events = append(events, e) })
	if code != 0 || !finished || !slices.Equal(events, []consoleEvent{kernelStarted, testsStarted}) {
		t.Errorf("code %d, finished %v, events %v", code, finished, events)
	}
	if lines[0] != "SeaBIOS (version 1.16.2)" || lines[1] != "[    0.000000] Linux version 6.1.0-56-cloud-amd64" || lines[len(lines)-1] != "[    2.1] reboot: Power down" {
		t.Errorf("lines = %q", lines)
	}
	code, finished = scanConsole(strings.NewReader("PASS"+exitMarker+"1\n"), func(string) {}, func(consoleEvent) {})
	if code != 1 || !finished {
		t.Errorf("failed tests: code %d, finished %v", code, finished)
	}
	if _, finished = scanConsole(strings.NewReader("Kernel panic - not syncing\n"), func(string) {}, func(consoleEvent) {}); finished {
		t.Error("a console without the exit marker counted as finished")
	}
}

// TestBoot boots a guest that runs this test again: inside, it checks what
// InitIfGuest promises (mounts, modules loaded, lo up, the test binary as
// /init) and that it can do what the host kernel may not.
func TestBoot(t *testing.T) {
	if !InGuest() {
		tm := Run(t, Config{Run: "^TestBoot$", Modules: []string{"bridge", "veth", "8021q"}})
		if !tm.Finished || tm.Boot <= 0 {
			t.Errorf("timings %+v", tm)
		}
		return
	}
	if os.Getppid() != 1 {
		t.Errorf("the guest's tests run under pid %d, want init (1)", os.Getppid())
	}
	if exe, err := os.Executable(); err != nil || exe != "/init" {
		t.Errorf("executable = %q (%v), want /init", exe, err)
	}
	mods, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"veth ", "8021q ", "garp ", "mrp "} {
		if !strings.Contains(string(mods), "\n"+m) && !strings.HasPrefix(string(mods), m) {
			t.Errorf("module %s not loaded:\n%s", strings.TrimSpace(m), mods)
		}
	}
	for _, dir := range []string{"/sys/class/net", "/dev/null", "/run", "/tmp"} {
		if _, err := os.Stat(dir); err != nil {
			t.Error(err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil || lo.Attrs().Flags&1 == 0 {
		t.Errorf("lo: %v, %v: want up", lo, err)
	}
	// What the host kernel of the project's machines lacks: a VLAN
	// filtering bridge and a VLAN interface.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "vmtestbr"}, VlanFiltering: new(true)}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatalf("add a VLAN filtering bridge: %v", err)
	}
	l, err := netlink.LinkByName("vmtestbr")
	if err != nil {
		t.Fatal(err)
	}
	v := &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "vmtestbr.7", ParentIndex: l.Attrs().Index}, VlanId: 7}
	if err := netlink.LinkAdd(v); err != nil {
		t.Fatalf("add a VLAN interface: %v", err)
	}
}
