//go:build linux

// Package nettest is the test support shared by wgkit's root-only tests
// and benchmarks on Linux (package tun's tests, the kernel benchmarks):
// throwaway network namespaces, and the test binary run again as a child
// process inside one of them.
//
// The children exist because a socket belongs to the network namespace of
// the thread that creates it, and wireguard-go creates its sockets later,
// from goroutines of its own: an engine that must live in a namespace has
// to run in a process inside it. A child is started as
// `ip netns exec NS <test binary> -test.run=^TEST$` with its role in the
// environment. The parent ([Proc]) sends one command per line on the
// child's stdin; the child ([Child]) answers each with one JSON [Reply] on
// a line of its stdout that starts with an agreed prefix (the test
// framework's own output is ignored) and logs to stderr, which the parent
// keeps and shows when the test fails.
//
// Nothing here touches the namespace of the test process: namespaces are
// made with `ip netns add` and removed in the test's cleanup, even when it
// fails.
package nettest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ipTimeout bounds one run of ip(8).
const ipTimeout = 10 * time.Second

// RequireRoot skips tb unless the process can create network namespaces
// and TUN devices: it runs as root, /dev/net/tun opens and ip(8) from
// iproute2 is installed.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipping: needs root to create network namespaces and TUN devices")
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		tb.Skipf("skipping: /dev/net/tun unavailable: %v", err)
	}
	f.Close()
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("skipping: ip(8) from iproute2 not installed")
	}
}

// IP runs ip(8) with args, for at most 10 seconds, and returns its output.
// It fails tb if ip fails.
func IP(tb testing.TB, args ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NewNetns creates a network namespace named prefix followed by 8 random
// hex digits, brings its lo up and returns its name. tb.Cleanup deletes
// it; cleanups run last in first out, so register what must stop before
// the namespace goes (child processes) after calling NewNetns. It skips tb
// when the namespace cannot be created (not permitted).
func NewNetns(tb testing.TB, prefix string) string {
	tb.Helper()
	suffix := make([]byte, 4)
	rand.Read(suffix)
	name := prefix + hex.EncodeToString(suffix)
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Skipf("skipping: ip netns add: %v: %s", err, out)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	IP(tb, "-n", name, "link", "set", "lo", "up")
	return name
}

// Reply is one answer of a child: OK, or the error Err; Data is the JSON
// of the answer's value, if any (a failed command may carry data too).
type Reply struct {
	OK   bool            `json:"ok"`
	Err  string          `json:"err,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
}

// Child is the child's side of the protocol. Create it with NewChild; it
// is used by the child's main goroutine only.
type Child struct {
	prefix string
	out    *bufio.Writer
	lines  chan string // the command lines; closed at the end of stdin
}

// NewChild starts reading command lines from stdin, in a goroutine that
// ends with stdin, and returns the Child that answers them on stdout in
// lines starting with prefix.
func NewChild(prefix string) *Child {
	c := &Child{prefix: prefix, out: bufio.NewWriter(os.Stdout), lines: make(chan string)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	return c
}

// Send writes one reply: OK unless err is not nil, with data as its JSON
// unless data is nil.
func (c *Child) Send(data any, err error) {
	r := Reply{OK: err == nil}
	if err != nil {
		r.Err = err.Error()
	}
	if data != nil {
		b, merr := json.Marshal(data)
		if merr != nil {
			r.OK, r.Err = false, merr.Error()
		}
		r.Data = b
	}
	b, _ := json.Marshal(r)
	fmt.Fprintf(c.out, "%s%s\n", c.prefix, b)
	c.out.Flush()
}

// Serve answers command lines "CMD ARG" with handle(CMD, ARG) until one
// of three things ends it: the command "close", answered with closeCmd()
// (which closes what the child runs); the end of stdin, as when the parent
// is gone; or lifetime, which bounds a child that its parent forgot. In
// the last two cases abandon closes what the child runs, and its error
// goes to log. Serve returns when it is done; the child then exits.
func (c *Child) Serve(lifetime time.Duration, log *slog.Logger, handle func(cmd, arg string) (any, error), closeCmd func() (any, error), abandon func() error) {
	deadline := time.NewTimer(lifetime)
	defer deadline.Stop()
	for {
		var line string
		ok := true
		select {
		case line, ok = <-c.lines:
		case <-deadline.C:
			log.Error("nettest: child lifetime exceeded, closing", "lifetime", lifetime)
			ok = false
		}
		if !ok {
			if err := abandon(); err != nil {
				log.Error("nettest: close", "err", err)
			}
			return
		}
		cmd, arg, _ := strings.Cut(line, " ")
		if cmd == "close" {
			c.Send(closeCmd())
			return
		}
		c.Send(handle(cmd, arg))
	}
}

// Options are the optional settings of Start. The zero value means the
// defaults.
type Options struct {
	// Env is added to the child's environment (the parent's): its role
	// and arguments.
	Env []string
	// LogStderr, when true, logs the child's stderr at Stop even when tb
	// has not failed. It is logged when tb has failed in any case.
	LogStderr bool
}

// Proc is the parent's handle on a child. Its methods are for the
// goroutine of the test or benchmark that started it.
type Proc struct {
	tb        testing.TB
	ns        string
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	lines     chan string
	stderr    *lockedBuffer
	done      chan struct{} // closed when the child has been reaped
	logStderr bool
}

// Start starts the test binary as a child in namespace ns, running only
// the test named test (which must hand over to Child when the environment
// says so), and returns at once; its first reply is the child's to choose
// (usually the outcome of its set-up), read with Next. Replies are the
// stdout lines starting with prefix. tb.Cleanup stops the child (Stop).
//
// The child gets SIGKILL when the parent dies (PR_SET_PDEATHSIG, which
// strictly follows the parent's thread that started it; Go ends a thread
// only when a goroutine exits while locked to it, which Start's callers
// do not do). `ip netns exec` execs the binary,
// so the setting carries over and the child's pid is the binary's.
func Start(tb testing.TB, ns, test, prefix string, opts *Options) *Proc {
	tb.Helper()
	if opts == nil {
		opts = &Options{}
	}
	exe, err := os.Executable()
	if err != nil {
		tb.Fatalf("find the test binary: %v", err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Wait also waits for stdout and stderr to be closed, which a
	// grandchild (a command the child runs) could delay.
	cmd.WaitDelay = 5 * time.Second
	p := &Proc{tb: tb, ns: ns, cmd: cmd, lines: make(chan string, 16), stderr: &lockedBuffer{},
		done: make(chan struct{}), logStderr: opts.LogStderr}
	cmd.Stderr = p.stderr
	cmd.Stdout = &replyWriter{prefix: prefix, lines: p.lines}
	p.stdin, err = cmd.StdinPipe()
	if err != nil {
		tb.Fatalf("child stdin: %v", err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start child in %s: %v", ns, err)
	}
	go func() {
		cmd.Wait()
		close(p.lines)
		close(p.done)
	}()
	tb.Cleanup(p.Stop)
	return p
}

// Send sends one command line.
func (p *Proc) Send(cmd string) error {
	if _, err := fmt.Fprintln(p.stdin, cmd); err != nil {
		return fmt.Errorf("nettest: send %q to the child in %s: %w", cmd, p.ns, err)
	}
	return nil
}

// Next waits up to timeout for the child's next reply. It fails (rather
// than tb) when the child has exited or not answered in time, or the reply
// is not JSON; an error reply is a Reply with OK false.
func (p *Proc) Next(timeout time.Duration) (Reply, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case s, ok := <-p.lines:
		if !ok {
			return Reply{}, fmt.Errorf("nettest: the child in %s exited", p.ns)
		}
		var r Reply
		if err := json.Unmarshal([]byte(s), &r); err != nil {
			return Reply{}, fmt.Errorf("nettest: bad reply %q: %w", s, err)
		}
		return r, nil
	case <-t.C:
		return Reply{}, fmt.Errorf("nettest: the child in %s did not reply in %v", p.ns, timeout)
	}
}

// Stderr returns what the child has written to stderr so far.
func (p *Proc) Stderr() string { return p.stderr.String() }

// Done is closed when the child has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Stop ends the child: closing its stdin makes it close what it runs and
// exit. If it has not within 15 seconds, it gets SIGQUIT (a Go child then
// writes its goroutines to stderr) and, 5 seconds later, SIGKILL, and tb
// fails. It logs the child's stderr if tb failed (or Options.LogStderr).
// Stop is registered with tb.Cleanup by Start; calling it again is
// harmless.
func (p *Proc) Stop() {
	p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
			}
		}
		p.tb.Errorf("child in %s did not exit in 15s; killed. stderr:\n%s", p.ns, p.stderr)
		return
	}
	if s := p.stderr.String(); s != "" && (p.tb.Failed() || p.logStderr) {
		p.tb.Logf("child in %s stderr:\n%s", p.ns, s)
	}
}

// replyWriter is a child's stdout: it passes on the reply lines (those
// starting with prefix, without it) and drops the rest. It never blocks:
// with one reply per command, a full channel means a child out of step,
// and the reply is dropped for the parent's wait to time out.
type replyWriter struct {
	prefix  string
	lines   chan<- string
	partial []byte // only the exec package's copying goroutine writes
}

func (r *replyWriter) Write(p []byte) (int, error) {
	r.partial = append(r.partial, p...)
	for {
		line, rest, ok := bytes.Cut(r.partial, []byte("\n"))
		if !ok {
			break
		}
		if s, ok := strings.CutPrefix(string(line), r.prefix); ok {
			select {
			case r.lines <- s:
			default:
			}
		}
		r.partial = rest
	}
	if len(r.partial) > 4<<20 {
		r.partial = nil // no reply is this long
	}
	return len(p), nil
}

// lockedBuffer collects a child's stderr.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ErrorOf returns r's error, nil for an OK reply.
func (r Reply) ErrorOf() error {
	if r.OK {
		return nil
	}
	return errors.New(r.Err)
}
