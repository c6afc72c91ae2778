package vmtest

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// cpioWriter writes a cpio archive in the "new ASCII" (newc) format, the one
// the kernel unpacks as an initramfs (Documentation/driver-api/
// early-userspace/buffer-format.rst): per entry a 110-byte header of
// hexadecimal fields, the NUL-terminated name padded to 4 bytes, the data
// padded to 4 bytes; a "TRAILER!!!" entry ends it.
type cpioWriter struct {
	w    *bufio.Writer
	ino  uint32
	err  error
	dirs map[string]bool
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriter(w), ino: 1, dirs: map[string]bool{"": true, ".": true}}
}

// Mode bits of the entry types the initramfs uses (S_IF* of stat(2)).
const (
	cpioDir     = 0o040000
	cpioFile    = 0o100000
	cpioSymlink = 0o120000
	cpioCharDev = 0o020000
)

// header writes the header and name of one entry with size bytes of data.
func (c *cpioWriter) header(name string, mode uint32, size int, major, minor uint32) {
	if c.err != nil {
		return
	}
	if size < 0 || int64(size) > 0xffffffff {
		c.err = fmt.Errorf("cpio: %s: size %d does not fit the newc format", name, size)
		return
	}
	c.ino++
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize, check.
	_, c.err = fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, size, 0, 0, major, minor, len(name)+1, 0)
	if c.err != nil {
		return
	}
	c.write([]byte(name + "\x00"))
	c.pad(110 + len(name) + 1)
}

func (c *cpioWriter) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

// pad writes the NULs that bring n bytes to a multiple of 4.
func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// clean turns a path into the form the archive holds: relative, no "./".
func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// parents writes the directories above name that are not in the archive yet.
func (c *cpioWriter) parents(name string) {
	dir := path.Dir(name)
	if c.dirs[dir] {
		return
	}
	c.parents(dir)
	c.Dir(dir, 0o755)
}

// Dir adds a directory (and its missing parents).
func (c *cpioWriter) Dir(name string, perm fs.FileMode) {
	name = clean(name)
	if c.dirs[name] {
		return
	}
	c.parents(name)
	c.dirs[name] = true
	c.header(name, cpioDir|uint32(perm.Perm()), 0, 0, 0)
}

// File adds a regular file with the given contents.
func (c *cpioWriter) File(name string, perm fs.FileMode, data []byte) {
	name = clean(name)
	c.parents(name)
	c.header(name, cpioFile|uint32(perm.Perm()), len(data), 0, 0)
	c.write(data)
	c.pad(len(data))
}

// Symlink adds a symbolic link name → target.
func (c *cpioWriter) Symlink(name, target string) {
	name = clean(name)
	c.parents(name)
	c.header(name, cpioSymlink|0o777, len(target), 0, 0)
	c.write([]byte(target))
	c.pad(len(target))
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm fs.FileMode, major, minor uint32) {
	name = clean(name)
	c.parents(name)
	c.header(name, cpioCharDev|uint32(perm.Perm()), 0, major, minor)
}

// Close writes the trailer and flushes; it returns the first error of any
// call.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	if c.err == nil {
		c.err = c.w.Flush()
	}
	return c.err
}
