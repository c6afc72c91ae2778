package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/vmtest"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
	buildOut  []byte
)

func TestMain(m *testing.M) {
	// In a vmtest guest the test binary is init first (it never returns
	// from here as PID 1).
	vmtest.InitIfGuest()
	if runAsProgram() {
		os.Exit(0)
	}
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	if ipamV6Dir != "" {
		_ = os.RemoveAll(ipamV6Dir)
	}
	os.Exit(code)
}

// pluginBinary builds bridge-v6 once per test run and returns its path:
// the chaining, runtime and concurrency tests exec the real binary, as a
// runtime does.
func pluginBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "bridge-v6-test-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, "bridge-v6"), ".")
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("build bridge-v6: %v\n%s", buildErr, buildOut)
	}
	return filepath.Join(buildDir, "bridge-v6")
}
