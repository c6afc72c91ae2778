package vmtest

import (
	"slices"
	"testing"
)

func TestParseLdd(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      []string
	}{
		{"dynamic", "\tlinux-vdso.so.1 (0x00007fd418b20000)\n" +
			"\tlibmnl.so.0 => /lib/x86_64-linux-gnu/libmnl.so.0 (0x00007fd41899c000)\n" +
			"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fd418796000)\n" +
			"\t/lib64/ld-linux-x86-64.so.2 (0x00007fd418b22000)\n",
			[]string{"/lib/x86_64-linux-gnu/libmnl.so.0", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}},
		{"not found", "\tlibfoo.so.1 => not found\n", nil},
		{"static", "\tnot a dynamic executable\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseLdd(tc.out); !slices.Equal(got, tc.want) {
				t.Errorf("parseLdd = %q, want %q", got, tc.want)
			}
		})
	}
}
