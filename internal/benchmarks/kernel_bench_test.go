//go:build linux

package benchmarks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/wgkit/wgkit/internal/nettest"
	"github.com/wgkit/wgkit/wg"
)

// The kernel benchmarks need root, /dev/net/tun and `ip netns`, and skip
// otherwise. For each implementation, each run of the benchmark function
// creates two network namespaces joined by a veth pair (created inside
// them) and deletes them in b.Cleanup; nothing is created in the
// benchmark's own namespace. The engines and the TCP endpoints run in
// child processes inside the namespaces (see kernel_child_test.go).

const (
	kernelChunk  = 1 << 20  // bytes per benchmark op
	kernelRound  = 16 << 20 // bytes per round of a sub-benchmark, at most
	kernelWarmup = 16 << 20 // bytes sent at set-up, past TCP slow start
	kernelPort   = 5201     // the TCP sink's port

	// kernelControlEnv set to 1 makes the benchmark an A/A control (see
	// BenchmarkKernelTCPThroughput).
	kernelControlEnv = "WGKIT_KBENCH_CONTROL"
)

// Outer (veth) and inner (tunnel) addresses; they exist only inside the
// benchmark's namespaces.
var (
	kernelOuterA = netip.MustParsePrefix("192.168.241.1/24")
	kernelOuterB = netip.MustParsePrefix("192.168.241.2/24")
	kernelInnerA = netip.MustParsePrefix("10.200.0.1/24")
	kernelInnerB = netip.MustParsePrefix("10.200.0.2/24")
)

// BenchmarkKernelTCPThroughput moves bulk TCP data through two WireGuard
// interfaces on kernel TUN devices, in two namespaces joined by a veth
// pair: from a sender behind the first (10.200.0.1) to a sink behind the
// second (10.200.0.2), over one connection. impl=stock is plain
// wireguard-go (tun.CreateTUN, device.NewDevice, UAPI text, ip(8));
// impl=wgkit is tun.Open with EngineUserspace (wireguard-go too, even
// where the kernel's WireGuard is loaded). Both use wireguard-go's
// offloads (TSO and GRO on the TUN, UDP GSO and GRO on the sockets) where
// the kernel has them; stock runs on wireguard-go's default Bind, wgkit on
// tun's (internal/udpbind, batch 128, sticky source) unless
// WGKIT_KBENCH_UDPBIND names another (see kernel_child_test.go).
//
// Both set-ups (four namespaces) are made once, with a 16 MiB warm-up on
// each connection. One op is 1 MiB. Each sub-benchmark moves its b.N MiB
// in rounds of up to 16 MiB and, in every round, moves as much through the
// other implementation, untimed, half a round at a time in the order own,
// other, other, own (every other round: other, own, own, other): the
// engines share a busy machine, and interleaving the two at this grain
// exposes both to the same load, which -count alone (it repeats one
// sub-benchmark before starting the next) does not.
//
// Besides MB/s it reports Mbit/s and the CPU time (user plus system) of the
// two engine processes per GB moved, cpu-s/GB (the TCP endpoints' CPU is
// not counted), and the same two measured on the other implementation's
// interleaved rounds as ratios: Mbit/s-vs-other (own Mbit/s over the
// other's) and cpu-vs-other (own cpu-s/GB over the other's). These paired
// ratios are far less noisy on a shared machine than the ratio of the
// separate medians.
//
// With WGKIT_KBENCH_CONTROL=1 in the environment it is an A/A control:
// the second implementation is stock too, reported as impl=stock2, which
// shows how far two identical set-ups differ on the machine at the time.
func BenchmarkKernelTCPThroughput(b *testing.B) {
	nettest.RequireRoot(b)
	second, secondImpl := "wgkit", "wgkit"
	if os.Getenv(kernelControlEnv) == "1" {
		second, secondImpl = "stock2", "stock"
	}
	envs := map[string]*kernelEnv{
		"stock": newKernelEnv(b, "stock"),
		second:  newKernelEnv(b, secondImpl),
	}
	for _, pair := range [][2]string{{"stock", second}, {second, "stock"}} {
		own, other := envs[pair[0]], envs[pair[1]]
		b.Run("impl="+pair[0], func(b *testing.B) { benchKernelThroughput(b, own, other) })
	}
}

func benchKernelThroughput(b *testing.B, own, other *kernelEnv) {
	total := int64(b.N) * kernelChunk
	b.SetBytes(kernelChunk)
	b.StopTimer()
	b.ResetTimer()
	ownT, otherT := kernelTally{env: own, timed: true}, kernelTally{env: other}
	for round, left := 0, total; left > 0; round++ {
		n := min(left, kernelRound)
		left -= n
		// Own, other, other, own, then other, own, own, other: a load
		// that changes steadily over a round weighs on both alike, and
		// each goes first as often.
		first, second := &ownT, &otherT
		if round%2 == 1 {
			first, second = second, first
		}
		first.add(b, n/2)
		second.add(b, n/2)
		second.add(b, n-n/2)
		first.add(b, n-n/2)
	}
	b.ReportMetric(ownT.mbps(), "Mbit/s")
	b.ReportMetric(ownT.cpuPerGB(), "cpu-s/GB")
	b.ReportMetric(ownT.mbps()/otherT.mbps(), "Mbit/s-vs-other")
	b.ReportMetric(ownT.cpuPerGB()/otherT.cpuPerGB(), "cpu-vs-other")
}

// kernelTally adds up the transfers through one implementation in a
// sub-benchmark.
type kernelTally struct {
	env   *kernelEnv
	timed bool // the benchmark timer runs during these transfers

	bytes     int64
	wall, cpu time.Duration
}

// add moves n bytes through t.env and counts them.
func (t *kernelTally) add(b *testing.B, n int64) {
	cpu0 := t.env.engineCPU(b)
	if t.timed {
		b.StartTimer()
	}
	start := time.Now()
	t.env.send(b, n)
	t.wall += time.Since(start)
	if t.timed {
		b.StopTimer()
	}
	t.cpu += t.env.engineCPU(b) - cpu0
	t.bytes += n
}

func (t *kernelTally) mbps() float64 { return float64(t.bytes) * 8 / 1e6 / t.wall.Seconds() }

func (t *kernelTally) cpuPerGB() float64 { return t.cpu.Seconds() / (float64(t.bytes) / 1e9) }

// kernelEnv is one implementation's namespaces and child processes.
type kernelEnv struct {
	engines      [2]*kernelProc
	sender, sink *kernelProc
}

// newKernelEnv sets up two namespaces joined by a veth pair, an engine of
// impl in each, a TCP sink in the second and a sender in the first,
// connected to the sink through the tunnel and warmed up. b.Cleanup stops
// the children and then deletes the namespaces.
func newKernelEnv(b *testing.B, impl string) *kernelEnv {
	b.Helper()
	nsA, nsB := nettest.NewNetns(b, "wgkb-"), nettest.NewNetns(b, "wgkb-")
	nettest.IP(b, "-n", nsA, "link", "add", "kb-a", "type", "veth", "peer", "name", "kb-b", "netns", nsB)
	nettest.IP(b, "-n", nsA, "addr", "add", kernelOuterA.String(), "dev", "kb-a")
	nettest.IP(b, "-n", nsB, "addr", "add", kernelOuterB.String(), "dev", "kb-b")
	nettest.IP(b, "-n", nsA, "link", "set", "kb-a", "up")
	nettest.IP(b, "-n", nsB, "link", "set", "kb-b", "up")
	kernelWaitUp(b, nsA, "kb-a")
	kernelWaitUp(b, nsB, "kb-b")

	ka, err := wg.GeneratePrivateKey()
	mustNoErr(b, err, "generate key")
	kb, err := wg.GeneratePrivateKey()
	mustNoErr(b, err, "generate key")
	peerOf := func(k wg.Key, outer netip.Prefix, port uint16, inner netip.Prefix) wg.Peer {
		return wg.Peer{
			PublicKey:  k.PublicKey(),
			Endpoint:   netip.AddrPortFrom(outer.Addr(), port).String(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(inner.Addr(), 32)},
		}
	}
	cfgA := &wg.Config{
		Interface: wg.Interface{PrivateKey: ka, ListenPort: 51820, Addresses: []netip.Prefix{kernelInnerA}},
		Peers:     []wg.Peer{peerOf(kb, kernelOuterB, 51821, kernelInnerB)},
	}
	cfgB := &wg.Config{
		Interface: wg.Interface{PrivateKey: kb, ListenPort: 51821, Addresses: []netip.Prefix{kernelInnerB}},
		Peers:     []wg.Peer{peerOf(ka, kernelOuterA, 51820, kernelInnerA)},
	}

	env := &kernelEnv{}
	for i, side := range []struct {
		ns  string
		cfg *wg.Config
	}{{nsA, cfgA}, {nsB, cfgB}} {
		text, err := side.cfg.MarshalText()
		mustNoErr(b, err, "marshal config")
		var off kernelOffloads
		env.engines[i] = startKernelProc(b, side.ns, &off,
			kernelRoleEnv+"=engine", kernelImplEnv+"="+impl, kernelConfigEnv+"="+string(text), kernelIfaceEnv+"=wgkb0")
		if !off.allOn() {
			b.Logf("%s engine in %s: offloads not all on: %v", impl, side.ns, off)
		} else if testing.Verbose() {
			b.Logf("%s engine in %s: %v", impl, side.ns, off)
		}
	}
	env.sender = startKernelProc(b, nsA, nil, kernelRoleEnv+"=tcp")
	env.sink = startKernelProc(b, nsB, nil, kernelRoleEnv+"=tcp")

	sinkAddr := netip.AddrPortFrom(kernelInnerB.Addr(), kernelPort).String()
	env.sink.must(b, "listen "+sinkAddr, 10*time.Second, nil)
	env.sender.must(b, "dial "+sinkAddr, 30*time.Second, nil)
	env.send(b, kernelWarmup)
	return env
}

// send moves n bytes from the sender to the sink.
func (e *kernelEnv) send(tb testing.TB, n int64) {
	e.sender.must(tb, fmt.Sprint("send ", n), kernelSendTimeout(n)+10*time.Second, nil)
}

// engineCPU returns the CPU time both engine processes have used so far.
func (e *kernelEnv) engineCPU(tb testing.TB) time.Duration {
	var sum time.Duration
	for _, p := range e.engines {
		var ns int64
		p.must(tb, "cpu", 10*time.Second, &ns)
		sum += time.Duration(ns)
	}
	return sum
}

// kernelWaitUp waits up to 5s for dev in ns to be operationally up: the
// kernel turns the carrier of a veth pair on asynchronously.
func kernelWaitUp(b *testing.B, ns, dev string) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-br", "link", "show", "dev", dev).CombinedOutput()
		cancel()
		if err == nil && bytes.Contains(out, []byte(" UP ")) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s in %s not up after 5s: %v: %s", dev, ns, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kernelProc is the benchmark's handle on a child process.
type kernelProc struct {
	*nettest.Proc
	ns string
	// broken is set when a command failed: the child may be out of step
	// (a late reply) or gone, so later commands fail at once. Only the
	// benchmark goroutine that calls must uses it, one at a time.
	broken bool
}

// startKernelProc starts this test binary as a child in namespace ns with
// the extra environment env, waits for its first reply (the outcome of
// its set-up) and decodes that reply's data into ready unless it is nil.
// The child is stopped in b.Cleanup.
func startKernelProc(b *testing.B, ns string, ready any, env ...string) *kernelProc {
	b.Helper()
	p := &kernelProc{ns: ns, Proc: nettest.Start(b, ns, "TestKernelBenchChild", kernelReplyPrefix,
		&nettest.Options{Env: env, LogStderr: testing.Verbose()})}
	if err := p.next(30*time.Second, ready); err != nil {
		b.Fatalf("child in %s (%s): %v\nstderr:\n%s", ns, strings.Join(env[:1], " "), err, p.Stderr())
	}
	return p
}

// next waits up to timeout for the child's next reply and decodes its data
// into out unless out is nil. It returns the error of an error reply.
func (p *kernelProc) next(timeout time.Duration, out any) error {
	r, err := p.Next(timeout)
	if err != nil {
		return err
	}
	if err := r.ErrorOf(); err != nil {
		return err
	}
	if out != nil {
		return json.Unmarshal(r.Data, out)
	}
	return nil
}

// must sends cmd, waits up to timeout for the reply and decodes its data
// into out unless out is nil; any failure fails tb, the benchmark whose
// goroutine calls must.
func (p *kernelProc) must(tb testing.TB, cmd string, timeout time.Duration, out any) {
	tb.Helper()
	if p.broken {
		tb.Fatalf("child in %s: %q: an earlier command failed", p.ns, cmd)
	}
	if err := p.Send(cmd); err != nil {
		p.broken = true
		tb.Fatal(err)
	}
	if err := p.next(timeout, out); err != nil {
		p.broken = true
		tb.Fatalf("child in %s: %q: %v\nstderr:\n%s", p.ns, cmd, err, p.Stderr())
	}
}
