//go:build linux

package vmtest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// GuestEnv is set to "1" in the environment of every payload; RequireVM
// and InVM look at it.
const GuestEnv = "WGKIT_VMTEST"

// Defaults of Options.
const (
	DefaultMemoryMiB = 1024
	DefaultCPUs      = 2
	// maxConsole bounds the console kept in Result.Console.
	maxConsole = 4 << 20
)

// Options are the optional settings of Run. nil and zero fields mean the
// documented defaults.
type Options struct {
	// MemoryMiB is the guest's memory, in MiB; 0 means 1024. The
	// initramfs, payload included, lives in it.
	MemoryMiB int
	// CPUs is the guest's number of CPUs; 0 means 2.
	CPUs int
	// Env are extra NAME=value settings for the payload's environment,
	// which also holds PATH, HOME=/tmp and WGKIT_VMTEST=1.
	Env []string
	// Console, if set, receives the serial console as it comes (the
	// kernel's messages and the payload's output). Result.Console holds
	// it too.
	Console io.Writer
}

// Result is the outcome of a VM run.
type Result struct {
	// ExitCode is the payload's exit status.
	ExitCode int
	// Console is the serial console, at most its first 4 MiB.
	Console []byte
	// Boot is the time from starting qemu to the payload's start, as far
	// as the console tells (0 when unknown); Total is qemu's whole run.
	Boot, Total time.Duration
}

// Run boots img with payload as the program its init runs, with args, and
// returns the payload's exit status. ctx bounds the whole run: when it
// ends, qemu is killed. An error means the VM did not report an exit
// status (qemu failed, the guest's setup failed, or ctx ended); the
// console so far is then in the error's text, shortened.
func Run(ctx context.Context, img *Image, payload string, args []string, opts *Options) (*Result, error) {
	if opts == nil {
		opts = &Options{}
	}
	mem, cpus := opts.MemoryMiB, opts.CPUs
	if mem == 0 {
		mem = DefaultMemoryMiB
	}
	if cpus == 0 {
		cpus = DefaultCPUs
	}
	if mem < 128 || cpus < 1 || cpus > 64 {
		return nil, fmt.Errorf("vmtest: run: bad size (%d MiB, %d CPUs)", mem, cpus)
	}
	for _, e := range opts.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || !shellName(k) {
			return nil, fmt.Errorf("vmtest: run: bad environment entry %.40q", e)
		}
	}
	nonce := make([]byte, 8)
	rand.Read(nonce)
	marker := "vmtest-" + hex.EncodeToString(nonce)

	work, err := os.MkdirTemp("", "wgkit-vmtest-")
	if err != nil {
		return nil, fmt.Errorf("vmtest: run: %w", err)
	}
	defer os.RemoveAll(work)
	initrd := filepath.Join(work, "initrd.gz")
	if err := writeInitramfs(initrd, img, payload, args, opts.Env, marker); err != nil {
		return nil, err
	}

	qemu := []string{
		"-nodefaults", "-no-user-config",
		"-accel", "tcg",
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-display", "none", "-serial", "stdio",
		"-nic", "none", // no network device: the guest has only lo
		"-no-reboot", // a kernel panic ends qemu instead of rebooting
		"-kernel", img.Kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet rdinit=/init",
	}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", qemu...)
	// CommandContext kills qemu (by PID) when ctx ends; WaitDelay bounds
	// the wait for its output pipe after that.
	cmd.WaitDelay = 5 * time.Second
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("vmtest: run: %w", err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vmtest: start qemu: %w", err)
	}
	res := &Result{ExitCode: -1}
	var console limitedBuffer
	var setupErr string
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := append(bytes.Clone(sc.Bytes()), '\n')
		console.Write(line)
		if opts.Console != nil {
			opts.Console.Write(line)
		}
		text := strings.TrimRight(string(line), "\r\n")
		i := strings.Index(text, marker)
		if i < 0 {
			continue
		}
		switch v := text[i+len(marker):]; {
		case v == "-start":
			res.Boot = time.Since(start)
		case strings.HasPrefix(v, "-exit="):
			if n, err := strconv.Atoi(v[len("-exit="):]); err == nil {
				res.ExitCode = n
			}
		case strings.HasPrefix(v, "-fail="):
			setupErr = v[len("-fail="):]
		}
	}
	io.Copy(io.Discard, out) // after a line over 1 MiB: drain to the end
	waitErr := cmd.Wait()
	res.Total = time.Since(start)
	res.Console = console.Bytes()
	switch {
	case setupErr != "":
		return res, fmt.Errorf("vmtest: guest setup failed: %s\nconsole:\n%s", setupErr, tail(res.Console, 3000))
	case res.ExitCode >= 0:
		return res, nil // reported, whatever happened during the power-off
	case ctx.Err() != nil:
		return res, fmt.Errorf("vmtest: VM killed after %v: %w\nconsole:\n%s", res.Total.Round(time.Millisecond), ctx.Err(), tail(res.Console, 3000))
	case waitErr != nil:
		return res, fmt.Errorf("vmtest: qemu: %w: %s\nconsole:\n%s", waitErr, tail(stderr.Bytes(), 400), tail(res.Console, 3000))
	}
	return res, fmt.Errorf("vmtest: the VM ended without the payload's exit status\nconsole:\n%s", tail(res.Console, 3000))
}

// shellName reports whether s is a valid environment variable name.
func shellName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// guestPayload is where the payload lives in the guest.
const guestPayload = "/payload"

// initScript is the guest's /init. Every failure before the payload runs
// is reported with the -fail= marker, and every path ends in a power-off
// (or, if that fails, in init's exit: a panic, which -no-reboot turns
// into qemu's exit).
func initScript(img *Image, args, env []string, marker string) string {
	var b strings.Builder
	fail := func(what string) string {
		return fmt.Sprintf("{ echo %s-fail=%s; poweroff -f; exit 1; }", marker, shellQuote(what))
	}
	b.WriteString("#!/bin/busybox sh\n")
	b.WriteString("/bin/busybox --install -s /bin || " + fail("busybox --install") + "\n")
	b.WriteString("export PATH=/bin:/usr/bin:/sbin:/usr/sbin HOME=/tmp\n")
	for _, m := range [][2]string{{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}, {"tmpfs", "/tmp"}, {"tmpfs", "/run"}} {
		fmt.Fprintf(&b, "mkdir -p %s && mount -t %s %s %s || %s\n", m[1], m[0], m[0], m[1], fail("mount "+m[1]))
	}
	b.WriteString("mkdir -p /var && ln -s /run /var/run\n")
	for _, m := range img.Modules {
		g := "/lib/modules/" + filepath.Base(m)
		fmt.Fprintf(&b, "insmod %s || %s\n", g, fail("insmod "+path.Base(g)))
	}
	b.WriteString("ip link set lo up || " + fail("ip link set lo up") + "\n")
	fmt.Fprintf(&b, "export %s=1\n", GuestEnv)
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
	}
	b.WriteString("cd /tmp\n")
	fmt.Fprintf(&b, "echo %s-start\n", marker)
	b.WriteString(guestPayload)
	for _, a := range args {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString(" </dev/null\n")
	fmt.Fprintf(&b, "echo %s-exit=$?\n", marker)
	b.WriteString("poweroff -f\n")
	return b.String()
}

// writeInitramfs writes the guest's initramfs to dst.
func writeInitramfs(dst string, img *Image, payload string, args, env []string, marker string) (err error) {
	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("vmtest: initramfs: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("vmtest: initramfs: %w", cerr)
		}
	}()
	// BestSpeed: the payload is most of the archive, and it is written
	// for every run.
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		return fmt.Errorf("vmtest: initramfs: %w", err)
	}
	c := newCPIOWriter(zw)
	files := map[string]string{"/bin/busybox": img.Busybox, guestPayload: payload}
	for g, h := range img.Files {
		files[g] = h
	}
	for _, m := range img.Modules {
		files["/lib/modules/"+filepath.Base(m)] = m
	}
	libs, err := sharedLibs(files, img.LibDirs)
	if err != nil {
		return err
	}
	for g, h := range libs {
		files[g] = h
	}
	if err := c.Bytes("/init", []byte(initScript(img, args, env, marker)), 0o755); err != nil {
		return err
	}
	for g, h := range files {
		if err := c.File(g, h); err != nil {
			return err
		}
	}
	if err := c.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("vmtest: initramfs: %w", err)
	}
	return nil
}

// sharedLibs returns the guest paths and host files of the shared
// libraries (and the program interpreter) the dynamic ELF binaries among
// files need, looked up by name in libDirs and placed in the guest at
// /lib/x86_64-linux-gnu (the interpreter at its own path).
func sharedLibs(files map[string]string, libDirs []string) (map[string]string, error) {
	out := map[string]string{}
	var visit func(host string) error
	visit = func(host string) error {
		f, err := elf.Open(host)
		if err != nil {
			return nil // not ELF (a script, a module's data): nothing to add
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type != elf.PT_INTERP {
				continue
			}
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return fmt.Errorf("vmtest: %s: %w", host, err)
			}
			interp := strings.TrimRight(string(b), "\x00")
			if _, ok := out[interp]; !ok {
				h, err := findLib(path.Base(interp), libDirs)
				if err != nil {
					return fmt.Errorf("vmtest: %s: interpreter: %w", filepath.Base(host), err)
				}
				out[interp] = h
			}
		}
		if f.Type == elf.ET_REL {
			return nil // a kernel module
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			return nil // static
		}
		for _, lib := range libs {
			g := "/lib/x86_64-linux-gnu/" + lib
			if _, ok := out[g]; ok {
				continue
			}
			h, err := findLib(lib, libDirs)
			if err != nil {
				return fmt.Errorf("vmtest: %s: %w", filepath.Base(host), err)
			}
			out[g] = h
			if err := visit(h); err != nil {
				return err
			}
		}
		return nil
	}
	for _, h := range files {
		if err := visit(h); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func findLib(name string, dirs []string) (string, error) {
	for _, d := range dirs {
		if p := filepath.Join(d, name); fileExists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("shared library %s not in %v", name, dirs)
}

// limitedBuffer keeps the first maxConsole bytes written to it and
// drops the rest. It is safe for concurrent use (exec copies stderr from
// a goroutine of its own).
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := maxConsole - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
