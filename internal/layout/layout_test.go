package layout

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/v6cni/v6cni/"

// goList runs `go list` at the module root and returns its output lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list %v: %v\n%s", args, err, stderr)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// TestPluginsLinkNoDaemon: a plugin binary is exec'd for every container;
// everything it links costs start-up time on every call, and the daemon's
// packages pull in etcd, gRPC and GoBGP.
func TestPluginsLinkNoDaemon(t *testing.T) {
	forbidden := []string{module + "pkg/daemon/", module + "ipamd", "go.etcd.io/", "google.golang.org/grpc", "github.com/osrg/gobgp"}
	for _, p := range []string{"./plugins/bridge-v6", "./plugins/ipam-v6", "./plugins/pd-ipam"} {
		forbid := forbidden
		if p != "./plugins/bridge-v6" {
			// The IPAM plugins touch no link: netlink would only slow
			// their start when a runtime execs them.
			forbid = append(forbid[:len(forbid):len(forbid)], "github.com/vishvananda/netlink", module+"pkg/link")
		}
		for _, dep := range goList(t, "-deps", p) {
			for _, f := range forbid {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s links %s (forbidden: %s)", p, dep, f)
				}
			}
		}
	}
}

// TestDaemonImportsNoPlugin: the daemon learns what it needs about an
// attachment from the request (ipamapi), never by parsing a plugin's config,
// so nothing on the daemon side imports the plugin side.
func TestDaemonImportsNoPlugin(t *testing.T) {
	for _, line := range goList(t, "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./ipamd/...", "./pkg/daemon/...") {
		pkg, imports, _ := strings.Cut(line, " ")
		for _, imp := range strings.Fields(imports) {
			if strings.HasPrefix(imp, module+"pkg/plugin/") || strings.HasPrefix(imp, module+"plugins/") {
				t.Errorf("%s imports %s: the daemon side must not import the plugin side", pkg, imp)
			}
		}
	}
}

// TestSharedImportsNeitherSide: pkg/ipamapi, pkg/ipamconf, pkg/link,
// pkg/ipmath and pkg/macaddr are linked by both; they import neither side.
func TestSharedImportsNeitherSide(t *testing.T) {
	for _, line := range goList(t, "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./pkg/...") {
		pkg, imports, _ := strings.Cut(line, " ")
		if strings.HasPrefix(pkg, module+"pkg/daemon/") || strings.HasPrefix(pkg, module+"pkg/plugin/") {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			if strings.HasPrefix(imp, module+"pkg/daemon/") || strings.HasPrefix(imp, module+"pkg/plugin/") {
				t.Errorf("shared package %s imports %s", pkg, imp)
			}
		}
	}
}
