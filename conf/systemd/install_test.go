package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestInstalledConfigRootOnly: `make install` leaves /etc/v6cni and its
// ipamd.yaml readable by root only (the config may hold the BGP password),
// and narrows an existing config it keeps.
func TestInstalledConfigRootOnly(t *testing.T) {
	dest := t.TempDir()
	install := func() {
		t.Helper()
		if out, err := exec.Command("make", "-C", "../..", "install", "DESTDIR="+dest).CombinedOutput(); err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
	}
	check := func(when string) {
		t.Helper()
		for p, want := range map[string]os.FileMode{"etc/v6cni": 0o700, "etc/v6cni/ipamd.yaml": 0o600} {
			fi, err := os.Stat(filepath.Join(dest, p))
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s: /%s has mode %04o, want %04o", when, p, got, want)
			}
		}
	}
	install()
	check("fresh install")
	cfg := filepath.Join(dest, "etc/v6cni/ipamd.yaml")
	if err := os.Chmod(cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	install()
	check("install over a 0644 config")
}
