package etcdembed

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDataDirPrivate: the data dir ends 0700 whether Start creates it or
// finds it (and its etcd subdirectory) open to others, and the narrowing
// is logged.
func TestDataDirPrivate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existing os.FileMode // 0: Start creates it
		warned   bool
	}{
		{"created", 0, false},
		{"existing 0755", 0o755, true},
		{"existing 0777", 0o777, true},
		{"existing 0700", 0o700, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "d")
			if tc.existing != 0 {
				if err := os.MkdirAll(filepath.Join(dir, "etcd"), 0o700); err != nil {
					t.Fatal(err)
				}
				for _, d := range []string{dir, filepath.Join(dir, "etcd")} {
					if err := os.Chmod(d, tc.existing); err != nil {
						t.Fatal(err)
					}
				}
			}
			var logs bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			s, err := Start(ctx, dir, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			for _, d := range []string{dir, filepath.Join(dir, "etcd")} {
				fi, err := os.Stat(d)
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.Mode().Perm(); got != 0o700 {
					t.Errorf("%s has mode %04o, want 0700", d, got)
				}
			}
			if got := strings.Contains(logs.String(), "narrowed to 0700"); got != tc.warned {
				t.Errorf("warning logged %v, want %v: %s", got, tc.warned, logs.String())
			}
		})
	}
}
