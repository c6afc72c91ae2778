// Package systemd holds only this test: it checks ipamd.service against
// what `make install` does and what ipamd needs, and the example config
// conf/ipamd.yaml the unit's --config names.
package systemd

import (
	"bufio"
	"encoding/json"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	unitFile     = "ipamd.service"
	makefile     = "../../Makefile"
	exampleConf  = "../ipamd.yaml"
	installedCfg = "/etc/v6cni/ipamd.yaml"
)

// ipamdKeys are the keys ipamd's config file accepts (ipamd/README.md).
var ipamdKeys = []string{
	"nodeName", "socket", "dataDir", "etcdEndpoints", "etcdCacert", "etcdCert",
	"etcdKey", "logFormat", "metricsAddr", "gcInterval", "gcGrace", "blockGrace",
	"pdInterface", "pdPrefixLength", "pd", "bgp",
}

// unit is a parsed unit file: section -> key -> values (a key may repeat).
type unit map[string]map[string][]string

func (u unit) get(section, key string) []string { return u[section][key] }

func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u.get(section, key)
	if len(v) != 1 {
		t.Errorf("%s: [%s] %s: want exactly one, found %d", unitFile, section, key, len(v))
		return ""
	}
	return v[0]
}

// parseUnit reads the INI-like syntax of systemd.syntax(7): [Section],
// Key=Value, comments with # or ;, lines continued with a backslash.
func parseUnit(t *testing.T, file string) unit {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	n, cont := 0, ""
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cont == "" && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cont += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		line, cont = cont+line, ""
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") {
				t.Errorf("%s:%d: malformed section header %q", file, n, line)
				continue
			}
			section = line[1 : len(line)-1]
			if u[section] != nil {
				t.Errorf("%s:%d: section [%s] again", file, n, section)
			}
			u[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" || strings.TrimSpace(k) == "" {
			t.Errorf("%s:%d: want Key=Value inside a section, got %q", file, n, line)
			continue
		}
		k = strings.TrimSpace(k)
		u[section][k] = append(u[section][k], strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// makeVar returns the default the Makefile gives a variable (NAME ?= V or
// NAME := V), with $(PREFIX) expanded.
func makeVar(t *testing.T, mk, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + `\s*[?:]?=[ \t]*(\S+)[ \t]*$`).FindStringSubmatch(mk)
	if m == nil {
		t.Fatalf("%s: no default for %s (the install target's variable)", makefile, name)
	}
	v := m[1]
	if strings.Contains(v, "$(PREFIX)") {
		v = strings.ReplaceAll(v, "$(PREFIX)", makeVar(t, mk, "PREFIX"))
	}
	return v
}

func TestUnit(t *testing.T) {
	u := parseUnit(t, unitFile)
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			t.Fatalf("%s: no [%s] section", unitFile, s)
		}
	}
	if u.one(t, "Unit", "Description") == "" {
		t.Errorf("%s: [Unit] Description is empty", unitFile)
	}
	if got := u.one(t, "Service", "Type"); got != "simple" {
		t.Errorf("%s: [Service] Type=%s, want simple (ipamd does not notify, no socket activation)", unitFile, got)
	}
	if got := u.one(t, "Service", "Restart"); got != "on-failure" {
		t.Errorf("%s: [Service] Restart=%s, want on-failure", unitFile, got)
	}
	if got := u.one(t, "Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("%s: [Install] WantedBy=%s, want multi-user.target", unitFile, got)
	}

	// ExecStart: the binary make install puts in $(BINDIR), and the config
	// it installs.
	mk, err := os.ReadFile(makefile)
	if err != nil {
		t.Fatal(err)
	}
	bin := path.Join(makeVar(t, string(mk), "BINDIR"), "ipamd")
	exec := strings.Fields(u.one(t, "Service", "ExecStart"))
	if len(exec) == 0 || exec[0] != bin {
		t.Errorf("%s: [Service] ExecStart=%s: want %s, where make install puts ipamd (%s: BINDIR)", unitFile, strings.Join(exec, " "), bin, makefile)
	}
	if !strings.Contains(string(mk), "s|^ExecStart="+bin+" |") {
		t.Errorf("%s: the install target no longer rewrites ExecStart=%s for another PREFIX", makefile, bin)
	}
	if len(exec) < 2 || exec[1] != "serve" {
		t.Errorf("%s: [Service] ExecStart=%s: want `%s serve ...`", unitFile, strings.Join(exec, " "), bin)
	}
	cfg := ""
	for i, a := range exec {
		if a == "--config" && i+1 < len(exec) {
			cfg = exec[i+1]
		} else if strings.HasPrefix(a, "--config=") {
			cfg = strings.TrimPrefix(a, "--config=")
		}
	}
	if cfg != installedCfg {
		t.Errorf("%s: [Service] ExecStart: --config %q, want %s (installed by make install)", unitFile, cfg, installedCfg)
	}
	if dir := makeVar(t, string(mk), "V6CNI_CONF_DIR"); path.Join(dir, "ipamd.yaml") != installedCfg {
		t.Errorf("%s: make install puts the config into %s, the unit reads %s", makefile, dir, installedCfg)
	}

	// Capabilities: exactly what ipamd needs, nothing taken away by other
	// options.
	caps := strings.Fields(strings.Join(u.get("Service", "CapabilityBoundingSet"), " "))
	for _, c := range []string{"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"} {
		if !slices.Contains(caps, c) {
			t.Errorf("%s: [Service] CapabilityBoundingSet=%s lacks %s", unitFile, strings.Join(caps, " "), c)
		}
	}
	for _, c := range caps {
		if strings.HasPrefix(c, "~") {
			t.Errorf("%s: [Service] CapabilityBoundingSet: a deny list (%s); list what is allowed", unitFile, c)
		}
	}
	for _, k := range []string{"User", "DynamicUser", "PrivateUsers"} {
		if v := u.get("Service", k); len(v) > 0 && v[0] != "root" && v[0] != "no" {
			t.Errorf("%s: [Service] %s=%s: ipamd runs as root (root-only socket, plugins run as root)", unitFile, k, v[0])
		}
	}

	// Host network namespace and visible netns files.
	families := strings.Fields(strings.Join(u.get("Service", "RestrictAddressFamilies"), " "))
	for _, f := range []string{"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"} {
		if !slices.Contains(families, f) {
			t.Errorf("%s: [Service] RestrictAddressFamilies lacks %s", unitFile, f)
		}
	}
	forbidden := map[string][]string{
		"PrivateNetwork":       {"yes", "true", "on", "1"},
		"ProtectProc":          {"invisible", "noaccess", "ptraceable"},
		"ProcSubset":           {"pid"},
		"PrivatePIDs":          {"yes", "true", "on", "1"},
		"NetworkNamespacePath": nil,
		"InaccessiblePaths":    nil,
		"TemporaryFileSystem":  nil,
	}
	for k, bad := range forbidden {
		for _, v := range u.get("Service", k) {
			if bad == nil || slices.Contains(bad, v) {
				t.Errorf("%s: [Service] %s=%s: ipamd needs the host's network namespace, /run/netns and /proc/<pid>/ns/net", unitFile, k, v)
			}
		}
	}

	// Writable directories under ProtectSystem=strict.
	if got := u.one(t, "Service", "ProtectSystem"); got != "strict" {
		t.Errorf("%s: [Service] ProtectSystem=%s, want strict", unitFile, got)
	}
	if got := u.one(t, "Service", "StateDirectory"); got != "v6cni" {
		t.Errorf("%s: [Service] StateDirectory=%s, want v6cni (/var/lib/v6cni)", unitFile, got)
	}
	if got := u.one(t, "Service", "RuntimeDirectory"); got != "v6cni" {
		t.Errorf("%s: [Service] RuntimeDirectory=%s, want v6cni (/run/v6cni)", unitFile, got)
	}
	if got := u.one(t, "Service", "RuntimeDirectoryPreserve"); got != "yes" && got != "restart" {
		t.Errorf("%s: [Service] RuntimeDirectoryPreserve=%s: the socket directory must survive restarts", unitFile, got)
	}
	writable := []string{"/var/lib/v6cni", "/run/v6cni"}
	for _, p := range strings.Fields(strings.Join(u.get("Service", "ReadWritePaths"), " ")) {
		if p = strings.TrimLeft(p, "-+"); !slices.Contains(writable, p) {
			writable = append(writable, p)
		}
	}
	for _, k := range []string{"NoNewPrivileges", "ProtectHome", "PrivateTmp"} {
		if got := u.one(t, "Service", k); got != "yes" && got != "true" && got != "read-only" {
			t.Errorf("%s: [Service] %s=%s, want yes", unitFile, k, got)
		}
	}

	// The example config: keys ipamd knows, paths the unit lets it write.
	data, err := os.ReadFile(exampleConf)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("%s: not YAML: %v", exampleConf, err)
	}
	var conf map[string]json.RawMessage
	if err := json.Unmarshal(js, &conf); err != nil {
		t.Fatalf("%s: not a mapping of keys: %v", exampleConf, err)
	}
	for k := range conf {
		if !slices.Contains(ipamdKeys, k) {
			t.Errorf("%s: unknown key %q (ipamd refuses it; known: %s)", exampleConf, k, strings.Join(ipamdKeys, ", "))
		}
	}
	for key, def := range map[string]string{"socket": "/run/v6cni/ipamd.sock", "dataDir": "/var/lib/v6cni/x"} {
		p := def
		if raw, ok := conf[key]; ok {
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Errorf("%s: %s: want a string: %v", exampleConf, key, err)
				continue
			}
			if key == "dataDir" {
				p = path.Join(p, "x")
			}
		}
		ok := false
		for _, w := range writable {
			if strings.HasPrefix(path.Clean(p), w+"/") {
				ok = true
			}
		}
		if !ok {
			t.Errorf("%s: %s %s is not writable under the unit's ProtectSystem=strict (writable: %s)", exampleConf, key, p, strings.Join(writable, " "))
		}
	}
	if _, ok := conf["etcdEndpoints"]; ok {
		t.Errorf("%s: the installed example must run the embedded etcd (no etcdEndpoints): it starts without an etcd cluster", exampleConf)
	}
}
