//go:build linux

package vmtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// DefaultTestTimeout bounds RunTest (the build, the preparation with its
// downloads, the boot and the guest's tests) when Test.Timeout is 0. The
// test binary's own deadline (-test.timeout) shortens it further.
const DefaultTestTimeout = 5 * time.Minute

// Test says what RunTest runs in the VM.
type Test struct {
	// Run is the -test.run pattern of the guest's tests. Required.
	Run string
	// Timeout bounds the whole RunTest call; 0 means DefaultTestTimeout.
	// The guest's tests get what is left after the build and the
	// preparation, minus a margin for the boot, as -test.timeout.
	Timeout time.Duration
	// Options are the VM's settings (nil means defaults); Console is
	// ignored: RunTest logs the console through t.
	Options *Options
}

// InVM reports whether the process is a payload of Run.
func InVM() bool { return os.Getenv(GuestEnv) == "1" }

// RequireVM skips tb unless it runs inside a VM of this package: a test
// that changes the guest's kernel (makes links, loads modules) calls it
// first.
func RequireVM(tb testing.TB) {
	tb.Helper()
	if !InVM() {
		tb.Skip("skipping: runs only inside the VM that vmtest.RunTest boots")
	}
}

// Skip skips tb with the reason a VM cannot run here: -short mode, inside
// a VM already, or a missing tool (see the package doc).
func Skip(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("skipping in -short mode: boots a VM")
	}
	if InVM() {
		tb.Skip("skipping: already inside a VM")
	}
	if runtime.GOARCH != "amd64" {
		tb.Skipf("skipping: the VM boots Debian's amd64 kernel with an amd64 payload, not %s", runtime.GOARCH)
	}
	for _, tool := range []struct{ name, pkg string }{
		{"qemu-system-x86_64", "qemu-system-x86"},
		{"apt-get", "apt"},
		{"apt-cache", "apt"},
		{"dpkg-deb", "dpkg"},
		{"depmod", "kmod"},
		{"modprobe", "kmod"},
		{"xz", "xz-utils"},
		{"go", "the Go toolchain"},
	} {
		if _, err := exec.LookPath(sbin(tool.name)); err != nil {
			tb.Skipf("skipping: %s (from %s) not found; it is needed to boot a VM", tool.name, tool.pkg)
		}
	}
}

// RunTest builds the test binary of the package in the current directory
// (the package under test) with CGO_ENABLED=0 and runs the tests matching
// test.Run in a VM: t fails when they fail, and the guest's console is in
// t's log. It skips t as Skip does.
func RunTest(t *testing.T, test Test) {
	t.Helper()
	Skip(t)
	if test.Run == "" {
		t.Fatal("vmtest: RunTest: empty Run pattern")
	}
	if _, err := regexp.Compile(test.Run); err != nil {
		t.Fatalf("vmtest: RunTest: bad Run pattern: %v", err)
	}
	timeout := test.Timeout
	if timeout == 0 {
		timeout = DefaultTestTimeout
	}
	deadline := time.Now().Add(timeout)
	if d, ok := t.Deadline(); ok && d.Add(-5*time.Second).Before(deadline) {
		deadline = d.Add(-5 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))

	start := time.Now()
	payload := filepath.Join(t.TempDir(), "payload.test")
	if err := buildTest(ctx, payload); err != nil {
		t.Fatal(err)
	}
	built := time.Now()
	img, err := Prepare(ctx, "", log)
	if err != nil {
		t.Fatal(err)
	}
	prepared := time.Now()

	// The guest's tests get what is left, less a margin for the boot and
	// the report, so that they time out (with their goroutine dump)
	// before qemu is killed.
	left := time.Until(deadline) - 30*time.Second
	if left < 30*time.Second {
		t.Fatalf("vmtest: only %v left for the VM after the build and the preparation", time.Until(deadline).Round(time.Second))
	}
	var opts Options
	if test.Options != nil {
		opts = *test.Options
	}
	opts.Console = nil
	args := []string{"-test.run=" + test.Run, "-test.v", "-test.timeout=" + left.Round(time.Second).String()}
	res, err := Run(ctx, img, payload, args, &opts)
	if res != nil {
		t.Logf("vmtest: guest console:\n%s", res.Console)
		t.Logf("vmtest: build %v, prepare %v, boot %v, VM total %v (kernel %s)",
			built.Sub(start).Round(time.Millisecond), prepared.Sub(built).Round(time.Millisecond),
			res.Boot.Round(time.Millisecond), res.Total.Round(time.Millisecond), img.Release)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("vmtest: the guest's tests %s failed (exit status %d); see the console above", test.Run, res.ExitCode)
	}
	if c := string(res.Console); !strings.Contains(c, "\n--- PASS: ") || strings.Contains(c, "no tests to run") {
		t.Fatalf("vmtest: no guest test matching %s passed", test.Run)
	}
}

// buildTest builds the current directory's test binary, static, at dst.
func buildTest(ctx context.Context, dst string) error {
	cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", dst, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("vmtest: build the guest's test binary: %w\n%s", err, tail(out, 2000))
	}
	return nil
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
