//go:build linux

package vmtest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

// TestCPIO writes an archive and reads it back with cpio(1).
func TestCPIO(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("skipping: cpio(1) not installed")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("from the host\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	for _, err := range []error{
		c.Bytes("/init", []byte("#!/bin/sh\n"), 0o755),
		c.Bytes("a/b/odd", []byte("abc"), 0o644), // 3 bytes: padding
		c.File("/usr/bin/tool", src),
		c.Symlink("/var/run", "/run"),
		c.Dir("/empty/dir"),
		c.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cpioName("/"); err == nil {
		t.Error(`cpioName("/"): no error`)
	}
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	cmd := exec.Command("cpio", "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir = out
	cmd.Stdin = &buf
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, b)
	}
	got := map[string]string{}
	filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == out {
			return err
		}
		rel, _ := filepath.Rel(out, p)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			got[rel] = "link " + target
		case fi.IsDir():
			got[rel] = "dir " + fi.Mode().Perm().String()
		default:
			b, _ := os.ReadFile(p)
			got[rel] = fi.Mode().Perm().String() + " " + string(b)
		}
		return nil
	})
	want := map[string]string{
		"init":         "-rwxr-xr-x #!/bin/sh\n",
		"a":            "dir -rwxr-xr-x",
		"a/b":          "dir -rwxr-xr-x",
		"a/b/odd":      "-rw-r--r-- abc",
		"usr":          "dir -rwxr-xr-x",
		"usr/bin":      "dir -rwxr-xr-x",
		"usr/bin/tool": "-rwxr-x--- from the host\n",
		"var":          "dir -rwxr-xr-x",
		"var/run":      "link /run",
		"empty":        "dir -rwxr-xr-x",
		"empty/dir":    "dir -rwxr-xr-x",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("archive content (-want +got):\n%s", diff)
	}
}

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"", "plain", "it's", `a"b$c` + "`d`", "-test.run=^Test(A|B)$", "new\nline"} {
		out, err := exec.Command("sh", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil {
			t.Fatalf("sh: %v", err)
		}
		if string(out) != s {
			t.Errorf("shellQuote(%q) reads back as %q", s, out)
		}
	}
}

// guestExitEnv tells TestGuest which status to exit with.
const guestExitEnv = "VMTEST_GUEST_EXIT"

// TestVM boots this package's test binary and checks, through TestGuest,
// what the guest looks like and that the payload's exit status comes
// back.
func TestVM(t *testing.T) {
	Skip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	payload := filepath.Join(t.TempDir(), "payload.test")
	if err := buildTest(ctx, payload); err != nil {
		t.Fatal(err)
	}
	img, err := Prepare(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(ctx, img, payload, []string{"-test.run=^TestGuest$", "-test.v"}, &Options{
		Env:       []string{guestExitEnv + "=3", "VMTEST_QUOTED=it's $HOME"},
		MemoryMiB: 512,
	})
	if res != nil {
		t.Logf("console:\n%s", res.Console)
		t.Logf("boot %v, total %v", res.Boot, res.Total)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 {
		t.Errorf("exit status %d, want 3", res.ExitCode)
	}
	if !bytes.Contains(res.Console, []byte("guest checks done")) {
		t.Error("the guest did not finish its checks")
	}
}

// TestGuest runs in the VM of TestVM.
func TestGuest(t *testing.T) {
	RequireVM(t)
	ents, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	var links []string
	for _, e := range ents {
		links = append(links, e.Name())
	}
	if diff := cmp.Diff([]string{"lo"}, links); diff != "" {
		t.Errorf("network interfaces (-want +got):\n%s", diff)
	}
	if flags, err := os.ReadFile("/sys/class/net/lo/operstate"); err != nil || strings.TrimSpace(string(flags)) == "down" {
		t.Errorf("lo not up: %q, %v", flags, err)
	}
	if _, err := os.Stat("/sys/module/wireguard"); err != nil {
		t.Errorf("wireguard module not loaded: %v", err)
	}
	if out, err := exec.Command("wg", "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "wireguard-tools") {
		t.Errorf("wg --version: %v: %s", err, out)
	}
	if got := os.Getenv("VMTEST_QUOTED"); got != "it's $HOME" {
		t.Errorf("VMTEST_QUOTED=%q", got)
	}
	mounts, _ := os.ReadFile("/proc/mounts")
	for _, m := range []string{" /proc ", " /sys ", " /dev ", " /tmp ", " /run "} {
		if !strings.Contains(string(mounts), m) {
			t.Errorf("%s not mounted:\n%s", strings.TrimSpace(m), mounts)
		}
	}
	if t.Failed() {
		return
	}
	t.Log("guest checks done")
	code, _ := strconv.Atoi(os.Getenv(guestExitEnv))
	if code != 0 {
		os.Exit(code) // what TestVM expects to see come back
	}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRunBounds checks that Run refuses bad options and that a context
// that ends kills the VM.
func TestRunBounds(t *testing.T) {
	Skip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := Prepare(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts *Options
		want string
	}{
		{"bad env", &Options{Env: []string{"1X=y"}}, `vmtest: run: bad environment entry "1X=y"`},
		{"no equals", &Options{Env: []string{"X"}}, `vmtest: run: bad environment entry "X"`},
		{"small", &Options{MemoryMiB: 64}, "vmtest: run: bad size (64 MiB, 2 CPUs)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(ctx, img, payload, nil, tc.opts)
			if err == nil {
				t.Fatal("no error")
			}
			if diff := cmp.Diff(tc.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("killed", func(t *testing.T) {
		// The context ends once the guest has printed its first line, so
		// the VM is running whatever the machine's load (a fixed timeout
		// could end before qemu starts, while the initramfs is written).
		short, cancel := context.WithCancel(ctx)
		defer cancel()
		ended := make(chan time.Time, 1)
		console := &cancelOnWrite{cancel: func() { ended <- time.Now(); cancel() }}
		stop := time.AfterFunc(30*time.Second, console.fire) // if the guest prints nothing
		defer stop.Stop()
		_, err := Run(short, img, payload, nil, &Options{Console: console})
		if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "vmtest: VM killed after ") {
			t.Errorf("Run with a context ended while the VM ran: %v", err)
		}
		select {
		case at := <-ended:
			if d := time.Since(at); d > 30*time.Second {
				t.Errorf("Run returned %v after its context ended", d)
			}
		default:
			t.Error("the context never ended")
		}
	})
}

// TestExtractVmlinux hides an ELF executable (this test binary) in a
// fake bzImage behind a compressed stream that is not ELF, and checks
// that extractVmlinux finds it, for each format whose tool is here.
func TestExtractVmlinux(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if checkELF(self) != nil {
		t.Skip("skipping: the test binary is not an ET_EXEC executable (built as PIE?)")
	}
	decoy := bytes.Repeat([]byte("not an ELF file "), 1000)
	for _, tc := range []struct {
		name, tool string
		args       []string
	}{
		{"gzip", "gzip", []string{"-1", "-c"}},
		{"xz", "xz", []string{"-0", "-c", "--check=crc32"}},
		{"zstd", "zstd", []string{"-1", "-c", "-q"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := exec.LookPath(tc.tool); err != nil {
				t.Skipf("skipping: %s not installed", tc.tool)
			}
			compress := func(b []byte) []byte {
				cmd := exec.Command(tc.tool, tc.args...)
				cmd.Stdin = bytes.NewReader(b)
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("%s: %v", tc.tool, err)
				}
				return out
			}
			var img bytes.Buffer
			img.WriteString("MZ a boot sector and setup code")
			img.Write(compress(decoy))
			img.Write(compress(exe))
			img.WriteString("trailing data")
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "vmlinux")
			if err := os.WriteFile(src, img.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := extractVmlinux(context.Background(), src, dst); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, exe) {
				t.Errorf("extracted %d bytes, want the %d of the hidden executable", len(got), len(exe))
			}
		})
	}
	t.Run("none", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "vmlinuz")
		os.WriteFile(src, decoy, 0o644)
		if err := extractVmlinux(context.Background(), src, filepath.Join(dir, "vmlinux")); err == nil {
			t.Error("no error for an image without a kernel")
		}
		if _, err := os.Stat(filepath.Join(dir, "vmlinux")); err == nil {
			t.Error("a failed extraction left a file")
		}
	})
}

// cancelOnWrite calls cancel once, at its first Write or fire.
type cancelOnWrite struct {
	once   sync.Once
	cancel func()
}

func (c *cancelOnWrite) fire() { c.once.Do(c.cancel) }

func (c *cancelOnWrite) Write(p []byte) (int, error) {
	c.fire()
	return len(p), nil
}
