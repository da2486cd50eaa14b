//go:build linux

package vmtest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// CacheEnv is the environment variable that names the cache directory;
// see the package doc.
const CacheEnv = "WGKIT_VMTEST_CACHE"

// kernelMeta is the Debian package whose dependency names the current
// kernel image package.
const kernelMeta = "linux-image-amd64"

// guestModule is the module the guest loads, with its dependencies. It is
// part of the kernel's cache key.
const guestModule = "wireguard"

// toolTimeout bounds each run of apt-get, dpkg-deb, depmod, modprobe, xz.
const toolTimeout = 3 * time.Minute

// Image is what a VM boots: a kernel, the modules its init loads, and the
// programs of the initramfs. Prepare returns one; it is a plain value,
// read-only once made.
type Image struct {
	// Kernel is the path of the kernel to boot: an ELF vmlinux (booted
	// through PVH) or a bzImage.
	Kernel string
	// Release is the kernel's release, as uname -r says (6.1.0-57-amd64).
	Release string
	// Modules are the paths of the .ko files to insmod, in load order.
	Modules []string
	// Busybox is the path of a static busybox, the guest's /bin/busybox.
	Busybox string
	// Files maps guest paths to host files added to the initramfs as they
	// are (wg(8) at /usr/bin/wg).
	Files map[string]string
	// LibDirs are the host directories where the shared libraries of
	// dynamic binaries in the initramfs are looked up (libc6's).
	LibDirs []string
}

// CacheDir returns the cache directory: $WGKIT_VMTEST_CACHE, or else
// wgkit-vmtest under os.UserCacheDir.
func CacheDir() (string, error) {
	if d := os.Getenv(CacheEnv); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("vmtest: cache directory: %w (set %s)", err, CacheEnv)
	}
	return filepath.Join(d, "wgkit-vmtest"), nil
}

// Prepare returns the Image, from the cache in dir ("" means CacheDir())
// or downloaded into it, and removes from the cache the versions it no
// longer uses. ctx bounds the whole preparation; log receives a line per
// package fetched (nil discards). It is safe to call from several
// processes at once: they take turns on a lock file in dir.
func Prepare(ctx context.Context, dir string, log *slog.Logger) (*Image, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dir == "" {
		var err error
		if dir, err = CacheDir(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("vmtest: cache: %w", err)
	}
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	p := &preparer{dir: dir, log: log, used: map[string]bool{}}

	tools := []string{"busybox-static", "wireguard-tools", "libc6"}
	pkgs, err := p.candidates(ctx, append([]string{kernelMeta}, tools...)...)
	if err != nil {
		return nil, err
	}
	meta := pkgs[kernelMeta]
	kpkg, _, _ := strings.Cut(meta.depends, " ")
	kpkg = strings.TrimSpace(strings.Split(kpkg, ",")[0])
	if !strings.HasPrefix(kpkg, "linux-image-") {
		return nil, fmt.Errorf("vmtest: %s depends on %q, not a linux-image package", kernelMeta, meta.depends)
	}
	kpkgs, err := p.candidates(ctx, kpkg)
	if err != nil {
		return nil, err
	}
	kern := kpkgs[kpkg]
	img := &Image{Files: map[string]string{}}
	kdir, err := p.unpacked(ctx, kern, kern.key()+"+"+guestModule, p.pruneKernel)
	if err != nil {
		return nil, err
	}
	if err := readKernelDir(kdir, img); err != nil {
		return nil, err
	}

	for _, name := range tools {
		pkg := pkgs[name]
		root, err := p.unpacked(ctx, pkg, pkg.key(), nil)
		if err != nil {
			return nil, err
		}
		switch name {
		case "busybox-static":
			img.Busybox = filepath.Join(root, "bin", "busybox")
		case "wireguard-tools":
			img.Files["/usr/bin/wg"] = filepath.Join(root, "usr", "bin", "wg")
		case "libc6":
			for _, d := range []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64"} {
				img.LibDirs = append(img.LibDirs, filepath.Join(root, d))
			}
		}
	}
	p.prune()
	for _, f := range append([]string{img.Busybox}, img.Files["/usr/bin/wg"]) {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("vmtest: cached package lacks a file: %w", err)
		}
	}
	return img, nil
}

// lockDir takes an exclusive flock on dir/.lock, waiting as long as ctx
// allows, and returns its release.
func lockDir(ctx context.Context, dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("vmtest: cache lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("vmtest: cache lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("vmtest: cache lock held by another process: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type preparer struct {
	dir  string
	log  *slog.Logger
	used map[string]bool // the cache entries of this Prepare
}

// prune removes the cache entries this Prepare did not use (the versions
// apt's candidates replaced) and the leftovers of interrupted runs. It
// runs under the lock; a VM that another process boots from an old entry
// at that moment may fail, which takes a version change to happen.
func (p *preparer) prune() {
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if name == ".lock" || p.used[name] || !e.IsDir() {
			continue
		}
		if err := os.RemoveAll(filepath.Join(p.dir, name)); err == nil {
			p.log.Info("vmtest: pruned from the cache", "entry", name)
		}
	}
}

// debPackage is a package at apt's candidate version.
type debPackage struct {
	name, version string
	depends       string // the Depends field, for the kernel's metapackage
}

// key is the cache directory name of p: name_version, the epoch's colon
// escaped as apt escapes it in file names.
func (p debPackage) key() string {
	return p.name + "_" + strings.ReplaceAll(p.version, ":", "%3a")
}

// candidates asks apt-cache for the candidate version of each name (no
// network; one call, as each call takes most of a second).
func (p *preparer) candidates(ctx context.Context, names ...string) (map[string]debPackage, error) {
	out, err := run(ctx, "", "apt-cache", append([]string{"show", "--no-all-versions"}, names...)...)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w (are apt's package lists there? run apt-get update)", err)
	}
	pkgs := map[string]debPackage{}
	var cur debPackage
	flush := func() {
		if cur.name != "" && cur.version != "" && !strings.ContainsAny(cur.version, "/ ") {
			if _, dup := pkgs[cur.name]; !dup {
				pkgs[cur.name] = cur
			}
		}
		cur = debPackage{}
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		if v, ok := strings.CutPrefix(line, "Package: "); ok {
			cur.name = v
		}
		if v, ok := strings.CutPrefix(line, "Version: "); ok {
			cur.version = v
		}
		if v, ok := strings.CutPrefix(line, "Depends: "); ok {
			cur.depends = v
		}
	}
	flush()
	for _, n := range names {
		if _, ok := pkgs[n]; !ok {
			return nil, fmt.Errorf("vmtest: apt-cache show: no usable version of %s", n)
		}
	}
	return pkgs, nil
}

// unpacked returns the cache directory of pkg, named key, downloading and
// unpacking it first if needed. prune, if set, turns the unpacked tree (root) into
// the cached directory's content (dst) instead of keeping all of it. The
// directory appears under its final name only when complete.
func (p *preparer) unpacked(ctx context.Context, pkg debPackage, key string, prune func(ctx context.Context, root, dst string) error) (string, error) {
	p.used[key] = true
	final := filepath.Join(p.dir, key)
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	tmp, err := os.MkdirTemp(p.dir, ".tmp-")
	if err != nil {
		return "", fmt.Errorf("vmtest: cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	if _, err := run(ctx, tmp, "apt-get", "download", "-q", pkg.name+"="+pkg.version); err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("vmtest: apt-get download %s left %d .deb files", pkg.name, len(debs))
	}
	root := filepath.Join(tmp, "root")
	if _, err := run(ctx, "", "dpkg-deb", "-x", debs[0], root); err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	dst := root
	if prune != nil {
		dst = filepath.Join(tmp, "pruned")
		if err := os.Mkdir(dst, 0o755); err != nil {
			return "", fmt.Errorf("vmtest: cache: %w", err)
		}
		if err := prune(ctx, root, dst); err != nil {
			return "", err
		}
	}
	if err := os.Rename(dst, final); err != nil {
		return "", fmt.Errorf("vmtest: cache: %w", err)
	}
	p.log.Info("vmtest: cached", "package", key, "took", time.Since(start).Round(time.Millisecond))
	return final, nil
}

// The kernel's cache directory holds the kernel to boot (vmlinux, or
// bzImage when it could not be extracted), the modules (modules/*.ko) and
// modules/order, their load order, one file name a line, and release,
// the kernel's release.
const (
	kernelELF     = "vmlinux"
	kernelBzImage = "bzImage"
)

// pruneKernel keeps, of the unpacked kernel package root, the kernel and
// the guest's module with its dependencies.
func (p *preparer) pruneKernel(ctx context.Context, root, dst string) error {
	rels, err := filepath.Glob(filepath.Join(root, "lib", "modules", "*"))
	if err != nil || len(rels) != 1 {
		return fmt.Errorf("vmtest: kernel package has %d module trees, want 1", len(rels))
	}
	release := filepath.Base(rels[0])
	// The package leaves modules.dep to its postinst's depmod.
	if _, err := run(ctx, "", sbin("depmod"), "-b", root, release); err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	mods := filepath.Join(dst, "modules")
	if err := os.Mkdir(mods, 0o755); err != nil {
		return fmt.Errorf("vmtest: cache: %w", err)
	}
	var order []string
	seen := map[string]bool{}
	out, err := run(ctx, "", sbin("modprobe"), "--show-depends", "-d", root, "-S", release, guestModule)
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "insmod" {
			continue // "builtin NAME": nothing to load
		}
		name, err := copyModule(ctx, f[1], mods)
		if err != nil {
			return err
		}
		if !seen[name] {
			seen[name] = true
			order = append(order, name)
		}
	}
	if len(order) == 0 {
		return fmt.Errorf("vmtest: kernel %s: modprobe lists no module for %s", release, guestModule)
	}
	if err := os.WriteFile(filepath.Join(mods, "order"), []byte(strings.Join(order, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("vmtest: cache: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dst, "release"), []byte(release+"\n"), 0o644); err != nil {
		return fmt.Errorf("vmtest: cache: %w", err)
	}
	vmlinuz := filepath.Join(root, "boot", "vmlinuz-"+release)
	if err := extractVmlinux(ctx, vmlinuz, filepath.Join(dst, kernelELF)); err != nil {
		p.log.Info("vmtest: booting the bzImage", "why", err)
		if _, err := run(ctx, "", "cp", vmlinuz, filepath.Join(dst, kernelBzImage)); err != nil {
			return fmt.Errorf("vmtest: %w", err)
		}
	}
	return nil
}

// copyModule copies the module src into dir, uncompressed (busybox's
// insmod reads plain .ko files), and returns its file name there.
func copyModule(ctx context.Context, src, dir string) (string, error) {
	base := filepath.Base(src)
	var tool string
	switch {
	case strings.HasSuffix(base, ".ko.xz"):
		tool = "xz"
	case strings.HasSuffix(base, ".ko.zst"):
		tool = "zstd"
	case strings.HasSuffix(base, ".ko.gz"):
		tool = "gzip"
	case strings.HasSuffix(base, ".ko"):
		_, err := run(ctx, "", "cp", src, filepath.Join(dir, base))
		if err != nil {
			return "", fmt.Errorf("vmtest: %w", err)
		}
		return base, nil
	default:
		return "", fmt.Errorf("vmtest: module %s: unknown file type", base)
	}
	name := base[:strings.LastIndex(base, ".")]
	out, err := run(ctx, "", tool, "-dc", src)
	if err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), out, 0o644); err != nil {
		return "", fmt.Errorf("vmtest: cache: %w", err)
	}
	return name, nil
}

// compressor is a format extractVmlinux looks for.
type compressor struct {
	magic  string
	decode func(ctx context.Context, stream []byte, out io.Writer) error
}

// compressors are the formats of Debian's kernels, most likely first.
func compressors() []compressor {
	return []compressor{
		{"\xfd7zXZ\x00", func(ctx context.Context, b []byte, out io.Writer) error {
			return pipe(ctx, b, out, "xz", "-dc", "--single-stream")
		}},
		{"\x28\xb5\x2f\xfd", func(ctx context.Context, b []byte, out io.Writer) error {
			return pipe(ctx, b, out, "zstd", "-dc")
		}},
		{"\x1f\x8b\x08", func(_ context.Context, b []byte, out io.Writer) error {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				return err
			}
			zr.Multistream(false)
			_, err = io.Copy(out, zr)
			return err
		}},
	}
}

// extractVmlinux writes the ELF kernel inside the bzImage src to dst, as
// the kernel's scripts/extract-vmlinux does: it tries each compressed
// stream it finds and keeps the first that decompresses to an ELF file.
func extractVmlinux(ctx context.Context, src, dst string) error {
	img, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	var errs []error
	for _, c := range compressors() {
		for off := 0; ; {
			i := bytes.Index(img[off:], []byte(c.magic))
			if i < 0 {
				break
			}
			off += i
			f, err := os.Create(dst)
			if err != nil {
				return fmt.Errorf("vmtest: %w", err)
			}
			// A decoder may fail on the data after its stream (zstd
			// decodes on into whatever follows); as extract-vmlinux
			// does, what counts is a complete ELF file.
			err = c.decode(ctx, img[off:], f)
			if cerr := f.Close(); cerr != nil {
				return fmt.Errorf("vmtest: %w", cerr)
			}
			elfErr := checkELF(dst)
			if elfErr == nil {
				return nil
			}
			if len(errs) < 3 { // enough to say why, in a short error
				errs = append(errs, errors.Join(err, elfErr))
			}
			off++
		}
	}
	os.Remove(dst)
	return fmt.Errorf("vmtest: no ELF kernel in %s: %w", filepath.Base(src), errors.Join(errs...))
}

// checkELF checks that path is a complete x86-64 executable.
func checkELF(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		return fmt.Errorf("%s: not an x86-64 executable", path)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			if _, err := io.Copy(io.Discard, p.Open()); err != nil {
				return fmt.Errorf("%s: truncated: %w", path, err)
			}
		}
	}
	return nil
}

// readKernelDir fills img's kernel fields from a cached kernel directory.
func readKernelDir(dir string, img *Image) error {
	rel, err := os.ReadFile(filepath.Join(dir, "release"))
	if err != nil {
		return fmt.Errorf("vmtest: cached kernel: %w", err)
	}
	img.Release = strings.TrimSpace(string(rel))
	img.Kernel = filepath.Join(dir, kernelELF)
	if _, err := os.Stat(img.Kernel); err != nil {
		img.Kernel = filepath.Join(dir, kernelBzImage)
	}
	order, err := os.ReadFile(filepath.Join(dir, "modules", "order"))
	if err != nil {
		return fmt.Errorf("vmtest: cached kernel: %w", err)
	}
	for _, name := range strings.Fields(string(order)) {
		img.Modules = append(img.Modules, filepath.Join(dir, "modules", name))
	}
	return nil
}

// sbin returns the path of a tool that lives in /sbin or /usr/sbin, which
// are not on a normal user's PATH.
func sbin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(d, name); fileExists(p) {
			return p
		}
	}
	return name
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// run runs a tool in dir ("" means the current one) for at most
// toolTimeout and returns its standard output; the error quotes the end
// of its standard error.
func run(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, toolTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, tail(stderr.Bytes(), 400))
	}
	return stdout.Bytes(), nil
}

// pipe runs a filter tool with in on its standard input.
func pipe(ctx context.Context, in []byte, out io.Writer, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, toolTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stdout = out
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, tail(stderr.Bytes(), 200))
	}
	return nil
}

// tail returns at most the last n bytes of b, trimmed, as text.
func tail(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = append([]byte("..."), b[len(b)-n:]...)
	}
	return string(b)
}
