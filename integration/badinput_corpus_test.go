package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// answerBound is the deadline issue 13 sets for refusing bad input. A
// plugin exec (Go binary start-up, one round trip to ipamd) measures
// 10–60 ms here; the bound leaves room for a loaded 2-core machine.
const answerBound = time.Second

// badExec is one malformed invocation of a plugin binary.
type badExec struct {
	name    string
	plugins []string          // default: bridge-v6 and ipam-v6
	command string            // CNI_COMMAND, default ADD
	env     map[string]string // overrides of the good environment
	drop    []string          // variables left out
	mutate  func(conf map[string]any)
	stdin   []byte // replaces the (mutated) good config when set
	code    uint
	want    []string
}

// drop is the value a mutator sets to remove a key.
type dropKey struct{}

// setPath sets (or, with dropKey{}, removes) the value at a dotted path
// like "ipam.ranges.0.0.subnet" in a decoded config.
func setPath(conf map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	var cur any = conf
	for i, p := range parts {
		last := i == len(parts)-1
		switch c := cur.(type) {
		case map[string]any:
			if last {
				if _, ok := v.(dropKey); ok {
					delete(c, p)
				} else {
					c[p] = v
				}
				return
			}
			cur = c[p]
		case []any:
			var idx int
			fmt.Sscan(p, &idx)
			if last {
				c[idx] = v
				return
			}
			cur = c[idx]
		default:
			panic("setPath: " + path)
		}
	}
}

func set(path string, v any) func(map[string]any) {
	return func(c map[string]any) { setPath(c, path, v) }
}

// deepJSON is n nested arrays.
func deepJSON(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }

// corpusConf is the good config the mutators start from, decoded afresh
// for each case.
func corpusConf(t *testing.T, n *testNet, ver string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(n.pluginConfBytes(t, ver), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// badExecCases is the hand-written and generated corpus of plugin
// invocations. good is the good config's bytes (for truncation), sub its
// /48, notBridge the name of a link the test made that is not a bridge.
func badExecCases(good []byte, sub, socket, notBridge string) []badExec {
	all3 := []string{"bridge-v6", "ipam-v6", "pd-ipam"}
	long := strings.Repeat("a", 10*1024)
	cs := []badExec{
		// ---- environment ----
		{name: "no CNI_COMMAND", plugins: all3, drop: []string{"CNI_COMMAND"}, code: 0},
		{name: "CNI_COMMAND unknown", plugins: all3, command: "FROB", code: 4, want: []string{"CNI_COMMAND", "FROB"}},
		{name: "CNI_COMMAND lower case", plugins: all3, command: "add", code: 4, want: []string{"CNI_COMMAND", "add"}},
		{name: "CNI_COMMAND empty", plugins: all3, command: "-", code: 0},
		{name: "no CNI_CONTAINERID", plugins: all3, drop: []string{"CNI_CONTAINERID"}, code: 4, want: []string{"CNI_CONTAINERID"}},
		{name: "no CNI_IFNAME", plugins: all3, drop: []string{"CNI_IFNAME"}, code: 4, want: []string{"CNI_IFNAME"}},
		{name: "no CNI_NETNS", plugins: all3, drop: []string{"CNI_NETNS"}, code: 4, want: []string{"CNI_NETNS"}},
		{name: "no CNI_PATH", plugins: all3, drop: []string{"CNI_PATH"}, code: 4, want: []string{"CNI_PATH"}},
		{name: "DEL without CNI_CONTAINERID", plugins: all3, command: "DEL", drop: []string{"CNI_CONTAINERID"}, code: 4, want: []string{"CNI_CONTAINERID"}},
		{name: "CHECK without CNI_IFNAME", plugins: all3, command: "CHECK", drop: []string{"CNI_IFNAME"}, code: 4, want: []string{"CNI_IFNAME"}},
		{name: "CNI_NETNS a regular file", plugins: []string{"bridge-v6"}, env: map[string]string{"CNI_NETNS": "/etc/hostname"}, code: 4, want: []string{"CNI_NETNS", "/etc/hostname"}},
		{name: "CNI_NETNS missing path", plugins: []string{"bridge-v6"}, env: map[string]string{"CNI_NETNS": "/run/netns/v6t-no-such-ns"}, code: 4, want: []string{"CNI_NETNS", "/run/netns/v6t-no-such-ns"}},
		{name: "CNI_NETNS a directory", plugins: []string{"bridge-v6"}, env: map[string]string{"CNI_NETNS": "/tmp"}, code: 4, want: []string{"CNI_NETNS", "/tmp"}},
		{name: "CNI_NETNS relative", plugins: []string{"bridge-v6"}, env: map[string]string{"CNI_NETNS": "netns"}, code: 4, want: []string{"CNI_NETNS", "netns"}},
		{name: "CNI_ARGS IP garbage", env: map[string]string{"CNI_ARGS": "IP=not-an-ip"}, code: 7, want: []string{"IP", "not-an-ip"}},
		{name: "CNI_ARGS IP zone", env: map[string]string{"CNI_ARGS": "IP=fe80::1%eth0"}, code: 7, want: []string{"IP", "fe80::1%eth0"}},
		{name: "CNI_ARGS two v6 IPs", env: map[string]string{"CNI_ARGS": "IP=2001:db8::1,2001:db8::2"}, code: 7, want: []string{"IP"}},
		{name: "CNI_ARGS no equals", env: map[string]string{"CNI_ARGS": "garbage"}, code: 4, want: []string{"CNI_ARGS", "garbage"}},
		{name: "CNI_ARGS empty key", env: map[string]string{"CNI_ARGS": "=x"}, code: 4, want: []string{"CNI_ARGS"}},
		{name: "CNI_ARGS MAC garbage", plugins: []string{"bridge-v6"}, env: map[string]string{"CNI_ARGS": "IgnoreUnknown=1;MAC=zz:zz"}, code: 7, want: []string{"MAC", "zz:zz"}},
		{name: "CNI_ARGS MAC multicast", plugins: []string{"bridge-v6"}, env: map[string]string{"CNI_ARGS": "IgnoreUnknown=1;MAC=01:00:5e:00:00:01"}, code: 7, want: []string{"MAC", "01:00:5e:00:00:01"}},

		// ---- versions ----
		{name: "cniVersion unknown", plugins: all3, mutate: set("cniVersion", "9.9.9"), code: 1, want: []string{"9.9.9"}},
		{name: "cniVersion garbage", plugins: all3, mutate: set("cniVersion", "one"), code: 1, want: []string{"one"}},
		{name: "cniVersion a number", plugins: all3, mutate: set("cniVersion", 1.1), code: 6, want: []string{"cniVersion"}},
		{name: "cniVersion an object", plugins: all3, mutate: set("cniVersion", map[string]any{}), code: 6, want: []string{"cniVersion"}},

		// ---- whole-document garbage ----
		{name: "empty stdin", plugins: all3, stdin: []byte{}, code: 6},
		{name: "whitespace stdin", plugins: all3, stdin: []byte(" \n\t "), code: 6},
		{name: "JSON null", plugins: all3, stdin: []byte("null"), code: 7, want: []string{"name"}},
		{name: "JSON array", plugins: all3, stdin: []byte("[]"), code: 6},
		{name: "JSON string", plugins: all3, stdin: []byte(`"cniVersion"`), code: 6},
		{name: "JSON number", plugins: all3, stdin: []byte("42"), code: 6},
		{name: "YAML", plugins: all3, stdin: []byte("cniVersion: 1.0.0\nname: x\n"), code: 6},
		{name: "NUL byte before the document", plugins: all3, stdin: append([]byte{0}, good...), code: 6},
		{name: "NUL byte after the document", plugins: all3, stdin: append(slices.Clone(good), 0), code: 6},
		{name: "two documents", plugins: all3, stdin: append(slices.Clone(good), good...), code: 6},
		{name: "trailing garbage", plugins: all3, stdin: append(slices.Clone(good), []byte("}}}")...), code: 6},
		{name: "invalid UTF-8 outside strings", plugins: all3, stdin: append([]byte{0xff, 0xfe}, good...), code: 6},
		{name: "deep array 100000", plugins: all3, stdin: []byte(deepJSON(100000)), code: 6},
		{name: "deep in an unknown field", stdin: []byte(`{"cniVersion":"1.0.0","name":"x","junk":` + deepJSON(20000) + `}`), code: 6},
		{name: "huge config 2 MiB", plugins: all3, mutate: set("junk", strings.Repeat("x", 2<<20)), code: 6, want: []string{"larger than"}},
		{name: "huge ranges list", mutate: func(c map[string]any) {
			var sets []any
			for i := range 5000 {
				sets = append(sets, []any{map[string]any{"subnet": fmt.Sprintf("fd%02x:%x::/32", i>>8&0xff, i&0xffff)}})
			}
			setPath(c, "ipam.ranges", sets)
		}, code: 7, want: []string{"ipam.ranges", "5000"}},
		{name: "huge range set", mutate: func(c map[string]any) {
			var set []any
			for i := range 1000 {
				set = append(set, map[string]any{"subnet": fmt.Sprintf("fd%02x:%x::/32", i>>8&0xff, i&0xffff)})
			}
			setPath(c, "ipam.ranges", []any{set})
		}, code: 7, want: []string{"ipam.ranges[0]", "1000"}},

		// ---- duplicate keys ----
		{name: "duplicate name", stdin: dupKey(good, "name", `"other-net"`), code: 6, want: []string{"name", "duplicate"}},
		{name: "duplicate ipam", stdin: dupKey(good, "ipam", `{"type":"ipam-v6","socket":"`+socket+`","ranges":[[{"subnet":"`+sub+`"}]]}`), code: 6, want: []string{"ipam", "duplicate"}},
		{name: "duplicate cniVersion", stdin: dupKey(good, "cniVersion", `"0.4.0"`), code: 6, want: []string{"cniVersion", "duplicate"}},

		// ---- name ----
		{name: "name missing", mutate: set("name", dropKey{}), code: 7, want: []string{"name"}},
		{name: "name empty", mutate: set("name", ""), code: 7, want: []string{"name"}},
		{name: "name path traversal", mutate: set("name", "../../etc/passwd"), code: 7, want: []string{"name", "../../etc/passwd"}},
		{name: "name with slash", mutate: set("name", "a/b"), code: 7, want: []string{"name", "a/b"}},
		{name: "name with NUL", mutate: set("name", "a\x00b"), code: 7, want: []string{"name"}},
		{name: "name with space", mutate: set("name", "a b"), code: 7, want: []string{"name", "a b"}},
		{name: "name with newline", mutate: set("name", "a\nb"), code: 7, want: []string{"name"}},
		{name: "name dot", mutate: set("name", "."), code: 7, want: []string{"name"}},
		{name: "name dotdot", mutate: set("name", ".."), code: 7, want: []string{"name"}},
		{name: "name unicode", mutate: set("name", "netz-ü"), code: 7, want: []string{"name"}},
		{name: "name 10 kB", mutate: set("name", long), code: 7, want: []string{"name"}},
		{name: "name a number", mutate: set("name", 42), code: 6, want: []string{"name"}},

		// ---- ipam section ----
		{name: "ipam missing", mutate: set("ipam", dropKey{}), code: 7, want: []string{"ipam"}},
		{name: "ipam.type a number", mutate: set("ipam.type", 5), code: 6, want: []string{"type"}},
		{name: "ipam.socket a list", mutate: set("ipam.socket", []any{}), code: 6, want: []string{"socket"}},
		{name: "ipam.ranges empty", mutate: set("ipam.ranges", []any{}), code: 7, want: []string{"ipam.ranges"}},
		{name: "ipam.ranges empty set", mutate: set("ipam.ranges", []any{[]any{}}), code: 7, want: []string{"ipam.ranges[0]"}},
		{name: "subnet missing", mutate: set("ipam.ranges.0.0.subnet", dropKey{}), code: 7, want: []string{"ipam.ranges[0][0].subnet"}},
		{name: "subnet garbage", mutate: set("ipam.ranges.0.0.subnet", "garbage"), code: 7, want: []string{"ipam.ranges[0][0].subnet", "garbage"}},
		{name: "subnet NUL", mutate: set("ipam.ranges.0.0.subnet", "2001:db8::/48\x00"), code: 7, want: []string{"ipam.ranges[0][0].subnet"}},
		{name: "subnet with zone", mutate: set("ipam.ranges.0.0.subnet", "fe80::%eth0/64"), code: 7, want: []string{"ipam.ranges[0][0].subnet"}},
		{name: "subnet link-local", mutate: set("ipam.ranges.0.0.subnet", "fe80::/64"), code: 7, want: []string{"ipam.ranges[0][0].subnet", "fe80::/64"}},
		{name: "subnet multicast", mutate: set("ipam.ranges.0.0.subnet", "ff00::/8"), code: 7, want: []string{"ipam.ranges[0][0].subnet", "ff00::/8"}},
		{name: "subnet loopback", mutate: set("ipam.ranges.0.0.subnet", "::1/128"), code: 7, want: []string{"ipam.ranges[0][0].subnet", "::1/128"}},
		{name: "subnet v4-mapped", mutate: set("ipam.ranges.0.0.subnet", "::ffff:10.0.0.0/104"), code: 7, want: []string{"ipam.ranges[0][0].subnet"}},
		{name: "subnet /129", mutate: set("ipam.ranges.0.0.subnet", "2001:db8::/129"), code: 7, want: []string{"ipam.ranges[0][0].subnet", "2001:db8::/129"}},
		{name: "subnet /-1", mutate: set("ipam.ranges.0.0.subnet", "2001:db8::/-1"), code: 7, want: []string{"ipam.ranges[0][0].subnet"}},
		{name: "subnet no length", mutate: set("ipam.ranges.0.0.subnet", "2001:db8::"), code: 7, want: []string{"ipam.ranges[0][0].subnet"}},
		{name: "subnet 10 kB", mutate: set("ipam.ranges.0.0.subnet", long), code: 7, want: []string{"ipam.ranges[0][0].subnet"}},
		{name: "subnet host bits", mutate: set("ipam.ranges.0.0.subnet", "2001:db8::1/48"), code: 7, want: []string{"ipam.ranges[0][0].subnet", "2001:db8::1/48"}},
		{name: "blockSize 0", mutate: set("ipam.ranges.0.0.blockSize", 0), code: 7, want: []string{"blockSize", "0"}},
		{name: "blockSize negative", mutate: set("ipam.ranges.0.0.blockSize", -64), code: 7, want: []string{"blockSize", "-64"}},
		{name: "blockSize 127", mutate: set("ipam.ranges.0.0.blockSize", 127), code: 7, want: []string{"blockSize", "127"}},
		{name: "blockSize 128", mutate: set("ipam.ranges.0.0.blockSize", 128), code: 7, want: []string{"blockSize", "128"}},
		{name: "blockSize 1e9", mutate: set("ipam.ranges.0.0.blockSize", 1e9), code: 7, want: []string{"blockSize"}},
		{name: "blockSize 2^63", stdin: bytes.Replace(good, []byte(`"blockSize":64`), []byte(`"blockSize":9223372036854775808`), 1), code: 6, want: []string{"blockSize"}},
		{name: "blockSize fractional", mutate: set("ipam.ranges.0.0.blockSize", 64.5), code: 6, want: []string{"blockSize"}},
		{name: "blockSize a string", mutate: set("ipam.ranges.0.0.blockSize", "64"), code: 6, want: []string{"blockSize"}},
		{name: "blockSize smaller than subnet", mutate: set("ipam.ranges.0.0.blockSize", 40), code: 7, want: []string{"blockSize", "40"}},
		{name: "exclude garbage", mutate: set("ipam.ranges.0.0.exclude", []any{"garbage"}), code: 7, want: []string{"exclude[0]", "garbage"}},
		{name: "exclude outside", mutate: set("ipam.ranges.0.0.exclude", []any{"2001:db8:ffff::/64"}), code: 7, want: []string{"exclude[0]", "2001:db8:ffff::/64"}},
		{name: "exclude larger than subnet", mutate: func(c map[string]any) {
			setPath(c, "ipam.ranges.0.0.exclude", []any{strings.Replace(sub, "/48", "/32", 1)})
		}, code: 7, want: []string{"exclude[0]"}},
		{name: "exclude the whole subnet", mutate: set("ipam.ranges.0.0.exclude", []any{sub}), code: 7, want: []string{"exclude[0]", sub}},
		{name: "exclude a string", mutate: set("ipam.ranges.0.0.exclude", sub), code: 6, want: []string{"exclude"}},
		{name: "overlap within a set", mutate: set("ipam.ranges.0", []any{map[string]any{"subnet": sub}, map[string]any{"subnet": strings.Replace(sub, "::/48", "::/64", 1)}}), code: 7, want: []string{"ipam.ranges", "overlaps"}},
		{name: "same range twice", mutate: set("ipam.ranges", []any{[]any{map[string]any{"subnet": sub}}, []any{map[string]any{"subnet": sub}}}), code: 7, want: []string{"ipam.ranges", sub}},
		{name: "overlap with ::/0", mutate: set("ipam.ranges", []any{[]any{map[string]any{"subnet": sub}}, []any{map[string]any{"subnet": "::/0"}}}), code: 7, want: []string{"ipam.ranges"}},
		{name: "mixed families in a set", mutate: set("ipam.ranges.0", []any{map[string]any{"subnet": sub}, map[string]any{"subnet": "10.99.0.0/16"}}), code: 7, want: []string{"ipam.ranges[0][1].subnet", "10.99.0.0/16"}},
		{name: "IPv4 /32 blockSize 31", mutate: set("ipam.ranges", []any{[]any{map[string]any{"subnet": "10.98.0.0/16", "blockSize": 31}}}), code: 7, want: []string{"blockSize", "31"}},
		{name: "subnetId negative", mutate: func(c map[string]any) {
			setPath(c, "ipam.ranges", dropKey{})
			setPath(c, "ipam.subnetId", -1)
		}, code: 7, want: []string{"ipam.subnetId", "-1"}},
		{name: "subnetId 65536", mutate: func(c map[string]any) {
			setPath(c, "ipam.ranges", dropKey{})
			setPath(c, "ipam.subnetId", 65536)
		}, code: 7, want: []string{"ipam.subnetId", "65536"}},
		{name: "subnetId with ranges", mutate: set("ipam.subnetId", 1), code: 7, want: []string{"ipam.ranges", "subnetId"}},
		{name: "addressing unknown", mutate: set("ipam.addressing", "random"), code: 7, want: []string{"ipam.addressing", "random"}},
		{name: "eui64 with /80 blocks", mutate: func(c map[string]any) {
			setPath(c, "ipam.addressing", "eui64")
			setPath(c, "ipam.ranges.0.0.blockSize", 80)
		}, code: 7, want: []string{"blockSize", "80"}},
		{name: "stickyGrace garbage", mutate: set("ipam.stickyGrace", "forever"), code: 7, want: []string{"ipam.stickyGrace", "forever"}},
		{name: "stickyGrace negative", mutate: set("ipam.stickyGrace", "-5m"), code: 7, want: []string{"ipam.stickyGrace", "-5m"}},
		{name: "stickyGrace a number", mutate: set("ipam.stickyGrace", 600), code: 6, want: []string{"stickyGrace"}},
		{name: "sticky a string", mutate: set("ipam.sticky", "yes"), code: 6, want: []string{"sticky"}},
		{name: "bgpCommunities garbage", mutate: set("ipam.bgpCommunities", []any{"65536:1"}), code: 7, want: []string{"ipam.bgpCommunities[0]", "65536:1"}},
		{name: "route dst garbage", mutate: set("ipam.routes", []any{map[string]any{"dst": "nowhere"}}), code: 7, want: []string{"ipam.routes[0].dst", "nowhere"}},
		{name: "route dst host bits", mutate: set("ipam.routes", []any{map[string]any{"dst": "2001:db8::1/64"}}), code: 7, want: []string{"ipam.routes[0].dst", "2001:db8::1/64"}},
		{name: "route gw garbage", mutate: set("ipam.routes", []any{map[string]any{"dst": "::/0", "gw": "gw"}}), code: 7, want: []string{"ipam.routes[0].gw", "gw"}},
		{name: "route gw other family", mutate: set("ipam.routes", []any{map[string]any{"dst": "::/0", "gw": "10.0.0.1"}}), code: 7, want: []string{"ipam.routes[0].gw", "10.0.0.1"}},
		{name: "route v4 without gw", mutate: set("ipam.routes", []any{map[string]any{"dst": "0.0.0.0/0"}}), code: 7, want: []string{"ipam.routes[0]", "0.0.0.0/0"}},
		{name: "routes an object", mutate: set("ipam.routes", map[string]any{}), code: 6, want: []string{"routes"}},
		{name: "nameserver garbage", mutate: set("ipam.dns", map[string]any{"nameservers": []any{"dns.example"}}), code: 7, want: []string{"ipam.dns.nameservers[0]", "dns.example"}},
		{name: "dns a string", mutate: set("ipam.dns", "8.8.8.8"), code: 6, want: []string{"dns"}},

		// ---- runtimeConfig, args, prevResult ----
		{name: "runtimeConfig a string", mutate: set("runtimeConfig", "x"), code: 6, want: []string{"runtimeConfig"}},
		{name: "runtimeConfig.ips a string", mutate: set("runtimeConfig", map[string]any{"ips": "2001:db8::1"}), code: 6, want: []string{"ips"}},
		{name: "runtimeConfig.ips garbage", mutate: set("runtimeConfig", map[string]any{"ips": []any{"garbage"}}), code: 7, want: []string{"runtimeConfig.ips[0]", "garbage"}},
		{name: "runtimeConfig.ips numbers", mutate: set("runtimeConfig", map[string]any{"ips": []any{1, 2}}), code: 6, want: []string{"ips"}},
		{name: "runtimeConfig.ips two v6", mutate: set("runtimeConfig", map[string]any{"ips": []any{"2001:db8::1", "2001:db8::2"}}), code: 7, want: []string{"runtimeConfig.ips[1]"}},
		{name: "runtimeConfig.mac garbage", plugins: []string{"bridge-v6"}, mutate: set("runtimeConfig", map[string]any{"mac": "nope"}), code: 7, want: []string{"mac", "nope"}},
		{name: "args.cni.ips garbage", mutate: set("args", map[string]any{"cni": map[string]any{"ips": []any{"::zz"}}}), code: 7, want: []string{"args.cni.ips[0]", "::zz"}},
		{name: "args.cni a list", mutate: set("args", map[string]any{"cni": []any{}}), code: 6, want: []string{"cni"}},
		{name: "args a number", mutate: set("args", 7), code: 6, want: []string{"args"}},
		{name: "prevResult a string on CHECK", plugins: []string{"bridge-v6"}, command: "CHECK", mutate: set("prevResult", "garbage"), code: 6, want: []string{"prevResult"}},
		{name: "prevResult ips wrong type on CHECK", plugins: []string{"bridge-v6"}, command: "CHECK", mutate: set("prevResult", map[string]any{"cniVersion": "1.1.0", "ips": "x"}), code: 6, want: []string{"prevResult"}},
		{name: "prevResult missing on CHECK", plugins: []string{"bridge-v6"}, command: "CHECK", code: 7, want: []string{"prevResult"}},
		{name: "GC valid-attachments wrong type", command: "GC", mutate: func(c map[string]any) { c["cni.dev/valid-attachments"] = "all" }, code: 6, want: []string{"valid-attachments"}},

		// ---- bridge-v6's own fields ----
		{name: "bridge name too long", plugins: []string{"bridge-v6"}, mutate: set("bridge", "v6t-bridge-name-too-long"), code: 7, want: []string{"bridge", "v6t-bridge-name-too-long"}},
		{name: "bridge name with slash", plugins: []string{"bridge-v6"}, mutate: set("bridge", "br/../x"), code: 7, want: []string{"bridge", "br/../x"}},
		{name: "bridge name empty", plugins: []string{"bridge-v6"}, mutate: set("bridge", ""), code: 7, want: []string{"bridge"}},
		{name: "bridge a number", plugins: []string{"bridge-v6"}, mutate: set("bridge", 0), code: 6, want: []string{"bridge"}},
		{name: "mtu negative", plugins: []string{"bridge-v6"}, mutate: set("mtu", -1), code: 7, want: []string{"mtu", "-1"}},
		{name: "mtu below IPv6 minimum", plugins: []string{"bridge-v6"}, mutate: set("mtu", 1000), code: 7, want: []string{"mtu", "1000"}},
		{name: "mtu huge", plugins: []string{"bridge-v6"}, mutate: set("mtu", 1<<20), code: 7, want: []string{"mtu"}},
		{name: "mtu a string", plugins: []string{"bridge-v6"}, mutate: set("mtu", "1500"), code: 6, want: []string{"mtu"}},
		{name: "vlan 4095", plugins: []string{"bridge-v6"}, mutate: set("vlan", 4095), code: 7, want: []string{"vlan", "4095"}},
		{name: "vlan negative", plugins: []string{"bridge-v6"}, mutate: set("vlan", -2), code: 7, want: []string{"vlan", "-2"}},
		{name: "ipv6Mode unknown", plugins: []string{"bridge-v6"}, mutate: set("ipv6Mode", "magic"), code: 7, want: []string{"ipv6Mode", "magic"}},
		{name: "ipv6Mode a number", plugins: []string{"bridge-v6"}, mutate: set("ipv6Mode", 6), code: 6, want: []string{"ipv6Mode"}},
		{name: "isGateway a string", plugins: []string{"bridge-v6"}, mutate: set("isGateway", "true"), code: 6, want: []string{"isGateway"}},
		{name: "hairpinMode a number", plugins: []string{"bridge-v6"}, mutate: set("hairpinMode", 1), code: 6, want: []string{"hairpinMode"}},
		{name: "slaac with /80 blocks", plugins: []string{"bridge-v6"}, mutate: func(c map[string]any) {
			setPath(c, "ipv6Mode", "slaac")
			setPath(c, "ipam.ranges.0.0.blockSize", 80)
		}, code: 7, want: []string{"blockSize", "80"}},
		{name: "ipam.type path traversal", plugins: []string{"bridge-v6"}, mutate: set("ipam.type", "../../bin/sh"), code: 7, want: []string{"ipam.type", "../../bin/sh"}},
		// A bridge name taken by another kind of link (here a veth the
		// test made, never the host's eth0): the config is at fault.
		{name: "bridge name of a veth", plugins: []string{"bridge-v6"}, mutate: set("bridge", notBridge), code: 7, want: []string{"bridge", notBridge, "veth"}},
	}

	// CNI_CONTAINERID and CNI_IFNAME: hostile values for every plugin.
	for _, id := range []string{"../../etc", "a/b", "/abs", "..", ".", "-leading-dash", "a b", "a\tb", "a;rm -rf", "ü", strings.Repeat("f", 10*1024), "a%2fb"} {
		// skel's own message names "containerID" and gives the value in
		// details; ipamd's (for the length skel does not bound) adds the
		// variable's name.
		want := []string{"containerID", id}
		if len(id) > 1024 {
			want = []string{"CNI_CONTAINERID", "10240 bytes"}
		}
		cs = append(cs, badExec{name: "CNI_CONTAINERID " + shorten(id), plugins: all3, env: map[string]string{"CNI_CONTAINERID": id}, code: 4, want: want})
		cs = append(cs, badExec{name: "DEL CNI_CONTAINERID " + shorten(id), plugins: all3, command: "DEL", env: map[string]string{"CNI_CONTAINERID": id}, code: 4, want: want})
	}
	for _, ifn := range []string{"eth0/1", "..", ".", "0123456789abcdef", strings.Repeat("e", 10*1024), "eth 0", "eth:0", "eth\t0", ""} {
		// skel's messages say "interface name" (without the value).
		want := []string{"interface name"}
		if ifn == "" {
			want = []string{"CNI_IFNAME"}
		}
		cs = append(cs, badExec{name: "CNI_IFNAME " + shorten(ifn), plugins: all3, env: map[string]string{"CNI_IFNAME": ifn}, code: 4, want: want})
	}

	// Truncations of the good config at 24 points: all are decode errors.
	for i := 1; i < 25; i++ {
		cut := len(good) * i / 25
		cs = append(cs, badExec{name: fmt.Sprintf("truncated at %d of %d", cut, len(good)), plugins: all3, stdin: good[:cut], code: 6})
	}

	// Wrong JSON types for every field of the ipam section.
	wrong := map[string][]any{
		"string": {42, true, []any{}, map[string]any{}},
		"list":   {"x", 42, map[string]any{}},
		"object": {"x", 42, []any{}},
	}
	for path, kind := range map[string]string{
		"ipam.type": "string", "ipam.socket": "string", "ipam.ranges": "list", "ipam.ranges.0": "list",
		"ipam.ranges.0.0": "object", "ipam.ranges.0.0.subnet": "string", "ipam.addressing": "string",
		"ipam.bgpCommunities": "list", "ipam": "object", "name": "string",
	} {
		leaf := path[strings.LastIndex(path, ".")+1:]
		if leaf == "0" {
			leaf = "ranges"
		}
		for _, v := range wrong[kind] {
			b, _ := json.Marshal(v)
			cs = append(cs, badExec{name: fmt.Sprintf("%s is %s", path, b), mutate: set(path, v), code: 6, want: []string{leaf}})
		}
	}
	return cs
}

// dupKey returns doc with a second "key": value member added at its end.
func dupKey(doc []byte, key, value string) []byte {
	i := bytes.LastIndexByte(doc, '}')
	out := slices.Clone(doc[:i])
	out = append(out, []byte(`,"`+key+`":`+value+`}`)...)
	return out
}

func shorten(s string) string {
	if len(s) > 20 {
		return fmt.Sprintf("%s…(%d bytes)", s[:8], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// rawCase is one request body sent straight to ipamd's socket.
type rawCase struct {
	name string
	path string
	body []byte
	code uint
	want []string
}

func rawCases(good json.RawMessage, network string) []rawCase {
	req := func(id, ifname string, conf json.RawMessage) []byte {
		b, _ := json.Marshal(ipamapi.Request{Network: network, ContainerID: id, IfName: ifname, Netns: "/proc/self/ns/net", Config: conf})
		return b
	}
	okID := "v6t-raw-" + network
	cs := []rawCase{
		{name: "empty body", path: ipamapi.PathAdd, body: nil, code: 6},
		{name: "null", path: ipamapi.PathAdd, body: []byte("null"), code: 6, want: []string{"network config"}},
		{name: "array", path: ipamapi.PathAdd, body: []byte("[]"), code: 6},
		{name: "string", path: ipamapi.PathAdd, body: []byte(`"add"`), code: 6},
		{name: "truncated", path: ipamapi.PathAdd, body: req(okID, "eth0", good)[:40], code: 6},
		{name: "huge body", path: ipamapi.PathAdd, body: []byte(`{"network":"` + strings.Repeat("n", 2<<20) + `"}`), code: 6, want: []string{"larger than"}},
		{name: "deep body", path: ipamapi.PathAdd, body: []byte(`{"config":` + deepJSON(100000) + `}`), code: 6},
		{name: "deep config field", path: ipamapi.PathAdd, body: []byte(`{"network":"` + network + `","config":{"junk":` + deepJSON(20000) + `}}`), code: 6},
		{name: "network a number", path: ipamapi.PathAdd, body: []byte(`{"network":5}`), code: 6, want: []string{"network"}},
		{name: "containerID a list", path: ipamapi.PathAdd, body: []byte(`{"containerID":[]}`), code: 6, want: []string{"containerID"}},
		{name: "config a string", path: ipamapi.PathAdd, body: []byte(`{"network":"x","config":"{}"}`), code: 6},
		{name: "config missing", path: ipamapi.PathAdd, body: []byte(`{"network":"x","containerID":"a","ifName":"eth0"}`), code: 6},
		{name: "duplicate containerID", path: ipamapi.PathAdd, body: []byte(`{"network":"` + network + `","containerID":"` + okID + `","containerID":"other","ifName":"eth0","config":` + string(good) + `}`), code: 6, want: []string{"containerID", "duplicate"}},
		{name: "duplicate key in config", path: ipamapi.PathAdd, body: req(okID, "eth0", dupKey(good, "name", `"other"`)), code: 6, want: []string{"name", "duplicate"}},
		{name: "NUL byte in body", path: ipamapi.PathAdd, body: append(req(okID, "eth0", good), 0), code: 6},
		{name: "network mismatch", path: ipamapi.PathAdd, body: []byte(`{"network":"other","containerID":"a","ifName":"eth0","config":` + string(good) + `}`), code: 7, want: []string{"other", network}},
		{name: "containerID NUL", path: ipamapi.PathAdd, body: req("a\x00b", "eth0", good), code: 4, want: []string{"CNI_CONTAINERID"}},
		{name: "containerID traversal", path: ipamapi.PathAdd, body: req("../../x", "eth0", good), code: 4, want: []string{"CNI_CONTAINERID"}},
		{name: "containerID 10 kB", path: ipamapi.PathAdd, body: req(strings.Repeat("c", 10*1024), "eth0", good), code: 4, want: []string{"CNI_CONTAINERID"}},
		{name: "containerID empty", path: ipamapi.PathAdd, body: req("", "eth0", good), code: 4, want: []string{"CNI_CONTAINERID"}},
		{name: "ifName slash", path: ipamapi.PathAdd, body: req(okID, "a/b", good), code: 4, want: []string{"CNI_IFNAME"}},
		{name: "ifName NUL", path: ipamapi.PathAdd, body: req(okID, "e\x00", good), code: 4, want: []string{"CNI_IFNAME"}},
		{name: "ifName newline", path: ipamapi.PathAdd, body: req(okID, "e\n", good), code: 4, want: []string{"CNI_IFNAME"}},
		{name: "netns NUL", path: ipamapi.PathAdd, body: []byte(`{"network":"` + network + `","containerID":"` + okID + `","ifName":"eth0","netns":"/run/netns/a\u0000b","config":` + string(good) + `}`), code: 4, want: []string{"CNI_NETNS"}},
		{name: "ifName empty", path: ipamapi.PathAdd, body: req(okID, "", good), code: 4, want: []string{"CNI_IFNAME"}},
		{name: "ifName too long", path: ipamapi.PathAdd, body: req(okID, "0123456789abcdef", good), code: 4, want: []string{"CNI_IFNAME"}},
		{name: "DEL containerID traversal", path: ipamapi.PathDel, body: req("../x", "eth0", good), code: 4, want: []string{"CNI_CONTAINERID"}},
		{name: "CHECK ifName dotdot", path: ipamapi.PathCheck, body: req(okID, "..", good), code: 4, want: []string{"CNI_IFNAME"}},
		{name: "STATUS config garbage", path: ipamapi.PathStatus, body: []byte(`{"network":"x","config":{"name":5}}`), code: 6, want: []string{"name"}},
		{name: "GC config garbage", path: ipamapi.PathGC, body: []byte(`{"network":"x","config":[]}`), code: 6},
		{name: "GC valid-attachments garbage", path: ipamapi.PathGC, body: req("", "", dupKeyless(good, `"cni.dev/valid-attachments":"all"`)), code: 6, want: []string{"valid-attachments"}},
		{name: "args garbage", path: ipamapi.PathAdd, body: func() []byte {
			b, _ := json.Marshal(ipamapi.Request{Network: network, ContainerID: okID, IfName: "eth0", Args: "IP=zzz", Config: good})
			return b
		}(), code: 7, want: []string{"IP", "zzz"}},
	}
	return cs
}

// dupKeyless adds member (`"k":v`) to the object doc.
func dupKeyless(doc []byte, member string) []byte {
	i := bytes.LastIndexByte(doc, '}')
	return append(slices.Clone(doc[:i]), []byte(","+member+"}")...)
}

// socketClient is an HTTP client of ipamd's unix socket.
func socketClient(socket string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}},
	}
}

// TestBadInputCorpus feeds the corpus to the plugin binaries and to ipamd's
// socket while a good network's ADD/DEL loop runs: every bad input is
// answered within answerBound with its CNI code and a message naming the
// field, the good network keeps working, and nothing is left behind.
func TestBadInputCorpus(t *testing.T) {
	const ver = "1.1.0"
	d := startIpamd(t)

	// The good network, served throughout.
	goodNet := newNet(t, d, false)
	goodList := goodNet.confList(t, ver)
	goodNS := newNetns(t)
	cni := newCNI(t)
	ctx, stop := context.WithCancel(context.Background())
	var goodOps, goodFails atomic.Int64
	var goodErrs []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			rc := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("v6t-good-%d", i), NetNS: goodNS.Path(), IfName: "eth0"}
			_, err := cni.AddNetworkList(context.Background(), goodList, rc)
			if err == nil {
				err = cni.DelNetworkList(context.Background(), goodList, rc)
			}
			goodOps.Add(1)
			if err != nil {
				goodFails.Add(1)
				mu.Lock()
				goodErrs = append(goodErrs, err.Error())
				mu.Unlock()
			}
		}
	})
	t.Cleanup(func() { stop(); wg.Wait() })

	badNet := newNet(t, d, false)
	badNS := newNetns(t)
	good := badNet.pluginConfBytes(t, ver)
	sub := badNet.subnet(t, 0).String()

	var tried int
	var slowest time.Duration
	var slowestName string
	observe := func(name string, took time.Duration) {
		tried++
		if took > slowest {
			slowest, slowestName = took, name
		}
	}

	// The link the "bridge name of a veth" case names (this kernel has
	// no dummy links): ADD must refuse it and leave it as it was.
	notBridge := "v6tnb" + randomHex(t, 4)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: notBridge}, PeerName: notBridge + "p"}); err != nil {
		t.Fatalf("create veth %s: %v", notBridge, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(notBridge); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	notBridgeBefore := hostLinkState(t, notBridge)

	for _, tc := range badExecCases(good, sub, d.socket, notBridge) {
		plugins := tc.plugins
		if plugins == nil {
			plugins = []string{"bridge-v6", "ipam-v6"}
		}
		for _, plugin := range plugins {
			t.Run(plugin+"/"+tc.name, func(t *testing.T) {
				stdin := tc.stdin
				if stdin == nil {
					c := corpusConf(t, badNet, ver)
					if tc.mutate != nil {
						tc.mutate(c)
					}
					var err error
					if stdin, err = json.Marshal(c); err != nil {
						t.Fatal(err)
					}
				}
				env := map[string]string{
					"CNI_COMMAND":     "ADD",
					"CNI_CONTAINERID": "v6t-bad-" + randomHex(t, 6),
					"CNI_NETNS":       badNS.Path(),
					"CNI_IFNAME":      "eth0",
					"CNI_PATH":        binDir,
				}
				if tc.command == "-" {
					env["CNI_COMMAND"] = ""
				} else if tc.command != "" {
					env["CNI_COMMAND"] = tc.command
				}
				maps.Copy(env, tc.env)
				for _, k := range tc.drop {
					delete(env, k)
				}
				var envList []string
				for k, v := range env {
					envList = append(envList, k+"="+v)
				}
				start := time.Now()
				r := execPluginRaw(t, plugin, envList, stdin)
				took := time.Since(start)
				observe(t.Name(), took)
				if r.exitCode == 0 && env["CNI_COMMAND"] == "ADD" {
					// Accepted: undo it so the next cases start clean.
					for i, e := range envList {
						if e == "CNI_COMMAND=ADD" {
							envList[i] = "CNI_COMMAND=DEL"
						}
					}
					t.Cleanup(func() { execPluginRaw(t, plugin, envList, stdin) })
				}
				if tc.code == 0 {
					// skel's documented answer to a missing CNI_COMMAND: the
					// plugin's "about" line on stderr, exit 0, nothing done.
					if r.exitCode != 0 || len(r.stdout) != 0 || len(r.stderr) == 0 {
						t.Errorf("exit %d, stdout %q, stderr %q; want exit 0 and only the about line on stderr", r.exitCode, r.stdout, r.stderr)
					}
					return
				}
				requireExecCNIError(t, r, tc.code, tc.want...)
				if took > answerBound {
					t.Errorf("answered in %v, want < %v", took, answerBound)
				}
			})
		}
	}

	client := socketClient(d.socket)
	goodIPAM, err := json.Marshal(corpusConf(t, badNet, ver))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range rawCases(goodIPAM, badNet.Name) {
		t.Run("socket/"+tc.name, func(t *testing.T) {
			start := time.Now()
			resp, err := client.Post("http://ipamd"+tc.path, "application/json", bytes.NewReader(tc.body))
			if err != nil {
				t.Fatalf("POST %s: %v", tc.path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			took := time.Since(start)
			observe(t.Name(), took)
			if resp.StatusCode == http.StatusOK {
				t.Fatalf("POST %s: 200 %s, want CNI error %d", tc.path, body, tc.code)
			}
			var ce types.Error
			if err := json.Unmarshal(body, &ce); err != nil || ce.Code == 0 {
				t.Fatalf("POST %s: %d %q is not a CNI error", tc.path, resp.StatusCode, body)
			}
			requireCNIError(t, &ce, tc.code, tc.want...)
			if took > answerBound {
				t.Errorf("answered in %v, want < %v", took, answerBound)
			}
		})
	}

	stop()
	wg.Wait()
	t.Logf("bad inputs tried: %d; slowest answer: %v (%s); good network ADD+DEL meanwhile: %d, failed %d",
		tried, slowest, slowestName, goodOps.Load(), goodFails.Load())
	if goodOps.Load() == 0 {
		t.Errorf("the good network's ADD/DEL loop never completed a round")
	}
	if goodFails.Load() != 0 {
		t.Errorf("good network failed %d of %d ADD/DEL rounds while bad input was fed: %v", goodFails.Load(), goodOps.Load(), goodErrs)
	}
	requireNothingLeft(t, d, badNet.Bridge, badNS)
	requireNothingLeft(t, d, goodNet.Bridge, goodNS)
	requireIpamdCheckClean(t, d)
	if after := hostLinkState(t, notBridge); after != notBridgeBefore {
		t.Errorf("link %s was changed by ADDs naming it as the bridge: %s, was %s", notBridge, after, notBridgeBefore)
	}
}

// hostLinkState is what an ADD could change on a host link: admin state, MTU,
// master, addresses.
func hostLinkState(t *testing.T, name string) string {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("addresses of %s: %v", name, err)
	}
	a := l.Attrs()
	s := fmt.Sprintf("flags %v mtu %d master %d addrs", a.Flags, a.MTU, a.MasterIndex)
	for _, addr := range addrs {
		s += " " + addr.IPNet.String()
	}
	return s
}

// requireIpamdCheckClean runs `ipamd check` and requires it to find the
// key space consistent.
func requireIpamdCheckClean(t *testing.T, d *ipamd) {
	t.Helper()
	cmd := exec.CommandContext(testCtx(t), filepath.Join(binDir, "ipamd"), "check", "--socket", d.socket)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "consistent") {
		t.Errorf("ipamd check: %v\n%s", err, out)
	}
}
