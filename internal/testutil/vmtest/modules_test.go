package vmtest

import (
	"reflect"
	"testing"
)

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"bridge":                        "bridge",
		"8021q.ko":                      "8021q",
		"kernel/net/llc/llc.ko":         "llc",
		"nf-tables.ko.xz":               "nf_tables",
		"/lib/modules/x/veth.ko.zst":    "veth",
		"kernel/drivers/net/macvlan.ko": "macvlan",
	} {
		if got := moduleName(in); got != want {
			t.Errorf("moduleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseModinfo(t *testing.T) {
	data := []byte("license=GPL\x00depends=stp,llc\x00alias=rtnl-link-bridge\x00\x00alias=net-pf-7\x00name=bridge\x00")
	got := parseModinfo(data)
	want := map[string][]string{
		"license": {"GPL"},
		"depends": {"stp,llc"},
		"alias":   {"rtnl-link-bridge", "net-pf-7"},
		"name":    {"bridge"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseModinfo = %v, want %v", got, want)
	}
}

// TestResolveModules resolves the VLAN tests' modules in the guest kernel
// install-deps.sh unpacked: dependencies first, each once.
func TestResolveModules(t *testing.T) {
	k, err := FindKernel()
	if err != nil {
		t.Fatal(err)
	}
	files, err := resolveModules(k.Modules, []string{"bridge", "8021q", "veth"})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, f := range files {
		if _, dup := pos[moduleName(f)]; dup {
			t.Errorf("%s listed twice", f)
		}
		pos[moduleName(f)] = i
	}
	for _, before := range [][2]string{{"llc", "stp"}, {"stp", "bridge"}, {"garp", "8021q"}, {"mrp", "8021q"}} {
		a, okA := pos[before[0]]
		b, okB := pos[before[1]]
		if !okA || !okB || a > b {
			t.Errorf("%s must come before %s: %v", before[0], before[1], files)
		}
	}
	if _, err := resolveModules(k.Modules, []string{"no_such_module"}); err == nil {
		t.Error("an unknown module resolved")
	}
}
