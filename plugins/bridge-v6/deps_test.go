package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoHeavyDeps keeps the plugin small: it is exec'd for every container,
// and every MB it links costs start-up time on every call.
func TestNoHeavyDeps(t *testing.T) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	cmd := exec.Command("go", "list", "-deps", "./plugins/bridge-v6")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps ./plugins/bridge-v6: %v\n%s", err, stderr)
	}
	forbidden := []string{"go.etcd.io/", "google.golang.org/grpc", "github.com/osrg/gobgp", "go.opentelemetry.io/"}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("bridge-v6 links %s (forbidden prefix %s)", dep, f)
			}
		}
	}
}
