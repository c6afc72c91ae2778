package crashpoint

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		name string
		n    int64
	}{
		{"", "", 1},
		{"add:after-reserve", "add:after-reserve", 1},
		{"pd:before-save@2", "pd:before-save", 2},
		{"pd:before-save@0", "pd:before-save", 1},
		{"pd:before-save@x", "pd:before-save", 1},
	} {
		if name, n := parse(tc.in); name != tc.name || n != tc.n {
			t.Errorf("parse(%q) = %q, %d; want %q, %d", tc.in, name, n, tc.name, tc.n)
		}
	}
}

// TestHitUnarmed: a point that is not armed never kills the test binary.
func TestHitUnarmed(t *testing.T) {
	Hit("add:after-reserve")
}
