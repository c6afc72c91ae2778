package allocator

import (
	"os"
	"path/filepath"
	"testing"
)

// TestNetnsExists: only a path missing from a directory that exists is
// gone; a directory ipamd cannot see proves nothing.
func TestNetnsExists(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "cni-live")
	if err := os.WriteFile(live, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		want       bool
	}{
		{"present", live, true},
		{"gone from a directory that exists", filepath.Join(dir, "cni-gone"), false},
		{"directory not visible to ipamd", filepath.Join(dir, "not-mounted", "cni-1"), true},
		{"parent is not a directory", filepath.Join(file, "cni-1"), true},
	} {
		if got := NetnsExists(tc.path); got != tc.want {
			t.Errorf("%s: NetnsExists(%s) = %v, want %v", tc.name, tc.path, got, tc.want)
		}
	}
}
