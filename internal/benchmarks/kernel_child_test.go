//go:build linux

package benchmarks

// The child processes of BenchmarkKernelTCPThroughput. Each runs inside one
// of the benchmark's network namespaces, started as
// `ip netns exec NS <this test binary> -test.run=^TestKernelBenchChild$`
// with its role in the environment: a WireGuard engine ("engine", stock or
// wgkit) or a TCP sender or sink ("tcp"). Sockets take the namespace of
// the process that creates them, and wireguard-go creates its own later,
// so the engines cannot run in the benchmark's process. The protocol is
// internal/nettest's: the parent sends one command per line on stdin and
// reads one JSON reply per line (lines starting with kernelReplyPrefix) on
// stdout; logs go to stderr.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/wgkit/wgkit/internal/nettest"
	"github.com/wgkit/wgkit/internal/udpbind"
	"github.com/wgkit/wgkit/tun"
	"github.com/wgkit/wgkit/wg"
)

const (
	kernelRoleEnv     = "WGKIT_KBENCH_ROLE"   // "engine" or "tcp"
	kernelImplEnv     = "WGKIT_KBENCH_IMPL"   // engine: "stock" or "wgkit"
	kernelConfigEnv   = "WGKIT_KBENCH_CONFIG" // engine: wg-quick text
	kernelIfaceEnv    = "WGKIT_KBENCH_IFACE"  // engine: interface name
	kernelReplyPrefix = "wgkit-kbench: "
	// kernelProfileEnv, when set (in the benchmark's environment, which
	// the children inherit) to a directory, makes each engine child write
	// a CPU profile of its whole life there as IMPL-PID.pprof.
	kernelProfileEnv = "WGKIT_KBENCH_CPUPROFILE"
	// kernelBindEnv replaces the Bind of the wgkit engine (tun's
	// default: internal/udpbind, batch 128, sticky source): "N" is
	// internal/udpbind with BatchSize N and a sticky source, "N/nosticky"
	// the same without the sticky source, "std" wireguard-go's
	// conn.NewDefaultBind (tun's default before).
	kernelBindEnv = "WGKIT_KBENCH_UDPBIND"
	// kernelChildLifetime bounds a child whose parent forgot it; closing
	// its stdin (the parent exiting does that too) ends it sooner.
	kernelChildLifetime = time.Hour
	// kernelMTU is the tunnel MTU of both implementations (wgkit's default).
	kernelMTU = 1420
)

// kernelChild is what a child runs: commands, and what to do on "close",
// on end of input and at the end of its lifetime.
type kernelChild interface {
	handle(cmd, arg string) (any, error)
	close() error
}

// TestKernelBenchChild is not a test: it is the body of the child processes
// of BenchmarkKernelTCPThroughput (see the top of this file) and skips
// unless started by it.
func TestKernelBenchChild(t *testing.T) {
	role := os.Getenv(kernelRoleEnv)
	if role == "" {
		t.Skip("not a test: the child process of BenchmarkKernelTCPThroughput")
	}
	os.Exit(runKernelChild(role))
}

func runKernelChild(role string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c := nettest.NewChild(kernelReplyPrefix)

	if dir := os.Getenv(kernelProfileEnv); dir != "" && role == "engine" {
		stop, err := startKernelProfile(dir, os.Getenv(kernelImplEnv))
		if err != nil {
			log.Error("cpu profile", "err", err)
		} else {
			defer stop()
		}
	}

	var (
		child kernelChild
		ready any
		err   error
	)
	switch role {
	case "engine":
		child, ready, err = startKernelEngine(os.Getenv(kernelImplEnv), os.Getenv(kernelIfaceEnv), os.Getenv(kernelConfigEnv), log)
	case "tcp":
		child = &kernelTCP{}
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	c.Send(ready, err)
	if err != nil {
		return 1
	}
	c.Serve(kernelChildLifetime, log, child.handle, func() (any, error) { return nil, child.close() }, child.close)
	return 0
}

// startKernelProfile starts a CPU profile of this process into
// dir/IMPL-PID.pprof and returns what stops it.
func startKernelProfile(dir, impl string) (stop func(), err error) {
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", impl, os.Getpid())))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// kernelOffloads is what an engine child finds about offloads once its
// engine is up: the TUN interface's features (ethtool's tx-tcp-segmentation,
// generic-segmentation-offload and generic-receive-offload) and, among the
// process's UDP sockets (the engine's), how many have UDP_GRO on and how
// many accept UDP_SEGMENT (GSO) -- the two checks wireguard-go's bind makes
// before it uses them.
type kernelOffloads struct {
	TunTSO, TunGSO, TunGRO bool
	UDPSockets             int
	UDPGRO, UDPGSO         int
}

func (o kernelOffloads) allOn() bool {
	return o.TunTSO && o.TunGSO && o.UDPSockets > 0 && o.UDPGRO == o.UDPSockets && o.UDPGSO == o.UDPSockets
}

func (o kernelOffloads) String() string {
	return fmt.Sprintf("tun tso=%v gso=%v gro=%v; udp sockets=%d with UDP_GRO on=%d, UDP_SEGMENT usable=%d",
		o.TunTSO, o.TunGSO, o.TunGRO, o.UDPSockets, o.UDPGRO, o.UDPGSO)
}

// kernelEngine is a WireGuard engine on a kernel TUN interface in the
// child's namespace.
type kernelEngine struct {
	closeFn func() error
	once    sync.Once
	err     error
}

// startKernelEngine opens the engine of impl on a TUN interface named
// iface with the wg-quick config cfgText, and reports its offloads.
func startKernelEngine(impl, iface, cfgText string, log *slog.Logger) (kernelChild, any, error) {
	cfg, err := wg.ParseConfig(strings.NewReader(cfgText))
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	var closeFn func() error
	switch impl {
	case "stock":
		closeFn, err = openKernelStock(iface, cfg, log)
	case "wgkit":
		closeFn, err = openKernelWgkit(iface, cfg, log)
	default:
		err = fmt.Errorf("unknown impl %q", impl)
	}
	if err != nil {
		return nil, nil, err
	}
	off, err := readKernelOffloads(iface)
	if err != nil {
		return nil, nil, errors.Join(err, closeFn())
	}
	return &kernelEngine{closeFn: closeFn}, off, nil
}

// openKernelStock is what a user of plain wireguard-go writes: its TUN
// driver and engine, UAPI text by hand, ip(8) for the address and link.
func openKernelStock(iface string, cfg *wg.Config, log *slog.Logger) (func() error, error) {
	t, err := wgtun.CreateTUN(iface, kernelMTU)
	if err != nil {
		return nil, fmt.Errorf("stock: create tun: %w", err)
	}
	logger := &device.Logger{
		Verbosef: device.DiscardLogf,
		Errorf:   func(format string, args ...any) { log.Error(fmt.Sprintf(format, args...)) },
	}
	dev := device.NewDevice(t, conn.NewDefaultBind(), logger)
	closeFn := func() error {
		dev.Close()
		select {
		case <-dev.Wait():
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("stock: device did not stop in 10s")
		}
	}
	if err := dev.IpcSet(stockUAPI(cfg)); err != nil {
		return nil, errors.Join(fmt.Errorf("stock: configure: %w", err), closeFn())
	}
	cmds := [][]string{{"link", "set", "dev", iface, "mtu", strconv.Itoa(kernelMTU)}}
	for _, a := range cfg.Interface.Addresses {
		cmds = append(cmds, []string{"addr", "add", a.String(), "dev", iface})
	}
	cmds = append(cmds, []string{"link", "set", "dev", iface, "up"})
	for _, args := range cmds {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
		cancel()
		if err != nil {
			return nil, errors.Join(fmt.Errorf("stock: ip %s: %w: %s", strings.Join(args, " "), err, out), closeFn())
		}
	}
	// The TUN's up event brings the engine up too; this makes sure it is
	// up (and its sockets bound) before the offloads are read.
	if err := dev.Up(); err != nil {
		return nil, errors.Join(fmt.Errorf("stock: up: %w", err), closeFn())
	}
	return closeFn, nil
}

// openKernelWgkit is tun.Open with the defaults, except for wg(8)'s UAPI
// socket, which would be a file in the host's /var/run/wireguard, and the
// engine: EngineUserspace, so that both sides run wireguard-go on a TUN
// even where the kernel's WireGuard module is loaded (EngineAuto would
// pick it, and its data path runs outside the process, whose CPU time
// this benchmark counts).
func openKernelWgkit(iface string, cfg *wg.Config, log *slog.Logger) (func() error, error) {
	cfg.Interface.MTU = kernelMTU
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := &tun.Options{Name: iface, Logger: log, DisableUAPI: true, Engine: tun.EngineUserspace}
	if v := os.Getenv(kernelBindEnv); v != "" {
		bind, err := kernelBind(v)
		if err != nil {
			return nil, fmt.Errorf("wgkit: %s=%q: %w", kernelBindEnv, v, err)
		}
		o.Bind = bind
	}
	ifc, err := tun.Open(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	if e := ifc.Engine(); e != tun.EngineUserspace {
		return nil, errors.Join(fmt.Errorf("wgkit: engine %v, want userspace", e), ifc.Close())
	}
	return ifc.Close, nil
}

// kernelBind returns the Bind that kernelBindEnv's value v names.
func kernelBind(v string) (conn.Bind, error) {
	if v == "std" {
		return conn.NewDefaultBind(), nil
	}
	batch, sticky := v, true
	if b, ok := strings.CutSuffix(v, "/nosticky"); ok {
		batch, sticky = b, false
	}
	n, err := strconv.Atoi(batch)
	if err != nil || n < 1 {
		return nil, errors.New(`want "std", a batch size N or "N/nosticky"`)
	}
	return udpbind.New(&udpbind.Options{BatchSize: n, StickySource: sticky}), nil
}

func (e *kernelEngine) handle(cmd, _ string) (any, error) {
	switch cmd {
	case "cpu":
		// The whole process's user plus system time, every thread: the
		// engine, its TUN and UDP I/O, and the kernel work done in them.
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return nil, err
		}
		return ru.Utime.Nano() + ru.Stime.Nano(), nil
	}
	return nil, fmt.Errorf("engine: unknown command %q", cmd)
}

func (e *kernelEngine) close() error {
	e.once.Do(func() { e.err = e.closeFn() })
	return e.err
}

// readKernelOffloads reads the offloads of interface iface and of the
// process's UDP sockets.
func readKernelOffloads(iface string) (kernelOffloads, error) {
	var o kernelOffloads
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return o, fmt.Errorf("offloads: socket: %w", err)
	}
	for _, f := range []struct {
		cmd uint32
		on  *bool
	}{{unix.ETHTOOL_GTSO, &o.TunTSO}, {unix.ETHTOOL_GGSO, &o.TunGSO}, {unix.ETHTOOL_GGRO, &o.TunGRO}} {
		if *f.on, err = ethtoolFlag(fd, iface, f.cmd); err != nil {
			break
		}
	}
	// Closed before the scan below, which must see the engine's sockets
	// only.
	unix.Close(fd)
	if err != nil {
		return o, fmt.Errorf("offloads: %s: %w", iface, err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return o, fmt.Errorf("offloads: %w", err)
	}
	for _, ent := range ents {
		fd, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_DGRAM {
			continue
		}
		if proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || proto != unix.IPPROTO_UDP {
			continue
		}
		o.UDPSockets++
		if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO); err == nil && v == 1 {
			o.UDPGRO++
		}
		if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err == nil {
			o.UDPGSO++
		}
	}
	return o, nil
}

// ethtoolFlag runs one of ethtool's legacy get-a-flag ioctls (struct
// ethtool_value) on interface iface.
func ethtoolFlag(fd int, iface string, cmd uint32) (bool, error) {
	v := struct{ cmd, data uint32 }{cmd: cmd}
	// struct ifreq: the name, then a union whose ifr_data points at the
	// ethtool request.
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [24 - unsafe.Sizeof(uintptr(0))]byte
	}
	copy(ifr.name[:], iface)
	ifr.data = unsafe.Pointer(&v)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return false, fmt.Errorf("ethtool ioctl %#x: %w", cmd, errno)
	}
	return v.data != 0, nil
}

// kernelTCP is the TCP side of the benchmark: a sink ("listen ADDR") or a
// sender ("dial ADDR", then "send N" as often as needed). On one
// connection, the sender writes an 8-byte big-endian count N and N bytes;
// the sink reads them and answers one byte; "send" replies with the
// nanoseconds this took.
type kernelTCP struct {
	wg sync.WaitGroup

	mu    sync.Mutex
	ln    net.Listener // guarded by mu
	conns []net.Conn   // guarded by mu; the sender's is conns[0]
}

// kernelSendTimeout bounds the transfer of n bytes: 30s plus 4 MiB/s.
func kernelSendTimeout(n int64) time.Duration {
	return 30*time.Second + time.Duration(n/(4<<20)+1)*time.Second
}

func (k *kernelTCP) handle(cmd, arg string) (any, error) {
	switch cmd {
	case "listen":
		ln, err := net.Listen("tcp", arg)
		if err != nil {
			return nil, err
		}
		k.mu.Lock()
		k.ln = ln
		k.mu.Unlock()
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				k.mu.Lock()
				k.conns = append(k.conns, c)
				k.mu.Unlock()
				k.wg.Add(1)
				go func() {
					defer k.wg.Done()
					kernelSink(c)
				}()
			}
		}()
		return nil, nil
	case "dial":
		// The sender idles while the other implementation's sender
		// runs; keep its congestion window open meanwhile. The setting
		// is the namespace's own.
		if err := os.WriteFile("/proc/sys/net/ipv4/tcp_slow_start_after_idle", []byte("0"), 0); err != nil {
			return nil, err
		}
		c, err := net.DialTimeout("tcp", arg, 20*time.Second)
		if err != nil {
			return nil, err
		}
		k.mu.Lock()
		k.conns = append(k.conns, c)
		k.mu.Unlock()
		return nil, nil
	case "send":
		n, err := strconv.ParseInt(arg, 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("send: bad count %q", arg)
		}
		k.mu.Lock()
		if len(k.conns) == 0 {
			k.mu.Unlock()
			return nil, errors.New("send: not connected")
		}
		c := k.conns[0]
		k.mu.Unlock()
		return kernelSend(c, n)
	}
	return nil, fmt.Errorf("tcp: unknown command %q", cmd)
}

// kernelSend sends n bytes to a sink on c and waits for its answer.
func kernelSend(c net.Conn, n int64) (int64, error) {
	c.SetDeadline(time.Now().Add(kernelSendTimeout(n)))
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	start := time.Now()
	binary.BigEndian.PutUint64(buf[:8], uint64(n))
	if _, err := c.Write(buf[:8]); err != nil {
		return 0, fmt.Errorf("send: %w", err)
	}
	binary.BigEndian.PutUint64(buf[:8], 0)
	for left := n; left > 0; {
		m := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:m]); err != nil {
			return 0, fmt.Errorf("send: %w", err)
		}
		left -= m
	}
	if _, err := io.ReadFull(c, buf[:1]); err != nil {
		return 0, fmt.Errorf("send: wait for the sink: %w", err)
	}
	return time.Since(start).Nanoseconds(), nil
}

// kernelSink answers each count and its bytes with one byte, until c
// fails or is closed.
func kernelSink(c net.Conn) {
	buf := make([]byte, 256<<10)
	for {
		c.SetDeadline(time.Now().Add(kernelChildLifetime))
		if _, err := io.ReadFull(c, buf[:8]); err != nil {
			return
		}
		// Read into buf rather than io.Copy to io.Discard, whose 8 KiB
		// reads would cost the sink more system calls than the sender.
		for left := int64(binary.BigEndian.Uint64(buf[:8])); left > 0; {
			m, err := c.Read(buf[:min(left, int64(len(buf)))])
			if err != nil {
				return
			}
			left -= int64(m)
		}
		if _, err := c.Write([]byte{1}); err != nil {
			return
		}
	}
}

func (k *kernelTCP) close() error {
	k.mu.Lock()
	if k.ln != nil {
		k.ln.Close()
	}
	for _, c := range k.conns {
		c.Close()
	}
	k.mu.Unlock()
	k.wg.Wait()
	return nil
}
