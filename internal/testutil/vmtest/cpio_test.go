package vmtest

import (
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// cpioEntry is one entry read back from a newc archive.
type cpioEntry struct {
	name       string
	mode       uint32
	rmaj, rmin uint32
	data       string
}

// readCPIO parses a newc archive strictly: magic, hex fields, NUL-terminated
// names, 4-byte alignment of headers and data, the trailer last.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("offset %d: field %d: %v", off, i, err)
		}
		return uint32(v)
	}
	for {
		if off%4 != 0 {
			t.Fatalf("header at offset %d is not 4-byte aligned", off)
		}
		if len(b) < off+110 || string(b[off:off+6]) != "070701" {
			t.Fatalf("offset %d: no newc header", off)
		}
		mode, size, rmaj, rmin, namesize := field(1), int(field(6)), field(9), field(10), int(field(11))
		nameEnd := off + 110 + namesize
		if b[nameEnd-1] != 0 {
			t.Fatalf("offset %d: name not NUL-terminated", off)
		}
		e := cpioEntry{name: string(b[off+110 : nameEnd-1]), mode: mode, rmaj: rmaj, rmin: rmin}
		dataStart := (nameEnd + 3) &^ 3
		e.data = string(b[dataStart : dataStart+size])
		off = (dataStart + size + 3) &^ 3
		if e.name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func TestCPIOWriter(t *testing.T) {
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.File("/init", 0o755, []byte("#!binary"))
	w.File("vmtest/modules/a.ko", 0o644, []byte("12345")) // parents created
	w.Dir("/vmtest", 0o755)                               // already there: not repeated
	w.Symlink("/var/run", "../run")
	w.CharDev("/dev/console", 0o600, 5, 1)
	w.File("empty", 0o644, nil)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range readCPIO(t, buf.Bytes()) {
		got = append(got, fmt.Sprintf("%s %o %d:%d %q", e.name, e.mode, e.rmaj, e.rmin, e.data))
	}
	want := []string{
		`init 100755 0:0 "#!binary"`,
		`vmtest 40755 0:0 ""`,
		`vmtest/modules 40755 0:0 ""`,
		`vmtest/modules/a.ko 100644 0:0 "12345"`,
		`var 40755 0:0 ""`,
		`var/run 120777 0:0 "../run"`,
		`dev 40755 0:0 ""`,
		`dev/console 20600 5:1 ""`,
		`empty 100644 0:0 ""`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("archive:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// GNU cpio, where installed, reads it as well.
	if cpio, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command(cpio, "-t", "--quiet")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cpio -t: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "vmtest/modules/a.ko") || !strings.Contains(string(out), "dev/console") {
			t.Errorf("cpio -t lists:\n%s", out)
		}
	}
}
