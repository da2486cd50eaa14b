//go:build linux

package vmtest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// cpioWriter writes a cpio archive in the "newc" format the kernel reads
// an initramfs in (Documentation/driver-api/early-userspace/buffer-format.rst).
// Entries are written as they are added; parent directories are added on
// first use. It is not safe for concurrent use.
type cpioWriter struct {
	w    *bufio.Writer
	ino  uint32
	dirs map[string]bool // directories written so far
	err  error           // the first write error; sticky
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<16), dirs: map[string]bool{"": true, ".": true}}
}

// cpioName cleans a guest path into an archive name: relative, no "..".
func cpioName(name string) (string, error) {
	clean := strings.TrimPrefix(path.Clean("/"+name), "/")
	if clean == "" {
		return "", fmt.Errorf("vmtest: cpio: empty path %q", name)
	}
	return clean, nil
}

// header writes one entry's header and name, padded to 4 bytes.
func (c *cpioWriter) header(name string, mode uint32, size int64) {
	if c.err != nil {
		return
	}
	if size > 0xffffffff {
		c.err = fmt.Errorf("vmtest: cpio: %s: %d bytes is too large for newc", name, size)
		return
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize (with its NUL), check.
	_, c.err = fmt.Fprintf(c.w, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
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

// pad writes the zeros that align n bytes to 4.
func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// mkdirAll adds name and every missing parent as a directory.
func (c *cpioWriter) mkdirAll(name string) {
	if c.dirs[name] {
		return
	}
	c.mkdirAll(path.Dir(name))
	c.dirs[name] = true
	c.header(name, 0o040755, 0)
}

// Dir adds a directory (and its parents), mode 0755.
func (c *cpioWriter) Dir(name string) error {
	clean, err := cpioName(name)
	if err != nil {
		return err
	}
	c.mkdirAll(clean)
	return c.err
}

// Symlink adds name as a symbolic link to target.
func (c *cpioWriter) Symlink(name, target string) error {
	clean, err := cpioName(name)
	if err != nil {
		return err
	}
	c.mkdirAll(path.Dir(clean))
	c.header(clean, 0o120777, int64(len(target)))
	c.write([]byte(target))
	c.pad(len(target))
	return c.err
}

// Bytes adds a regular file with the given content and permission bits.
func (c *cpioWriter) Bytes(name string, data []byte, perm fs.FileMode) error {
	clean, err := cpioName(name)
	if err != nil {
		return err
	}
	c.mkdirAll(path.Dir(clean))
	c.header(clean, 0o100000|uint32(perm.Perm()), int64(len(data)))
	c.write(data)
	c.pad(len(data))
	return c.err
}

// File adds the host file src (symbolic links followed) as name, keeping
// its permission bits.
func (c *cpioWriter) File(name, src string) error {
	clean, err := cpioName(name)
	if err != nil {
		return err
	}
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("vmtest: cpio: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("vmtest: cpio: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("vmtest: cpio: %s is not a regular file", src)
	}
	c.mkdirAll(path.Dir(clean))
	c.header(clean, 0o100000|uint32(fi.Mode().Perm()), fi.Size())
	if c.err != nil {
		return c.err
	}
	n, err := io.Copy(c.w, f)
	if err == nil && n != fi.Size() {
		err = errors.New("file changed size while being read")
	}
	if err != nil {
		c.err = fmt.Errorf("vmtest: cpio: %s: %w", src, err)
		return c.err
	}
	c.pad(int(n % 4))
	return c.err
}

// Close writes the trailer and flushes; it does not close the underlying
// writer.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0)
	if c.err == nil {
		c.err = c.w.Flush()
	}
	return c.err
}
