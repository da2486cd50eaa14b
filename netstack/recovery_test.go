package netstack_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
	"github.com/wgkit/wgkit/wg/wgtest"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// The tests in this file check that a bulk TCP stream through a tunnel
// comes back to speed soon after an outage ends: a partition, a roam, a
// peer removed and set again, a peer restarted. gVisor's defaults (RACK
// loss detection, an RTO that backs off to 120 s) left the stream crawling
// at a few KB/s for 20 s and more in a third of the trials; newStack's
// settings are what these tests hold in place (see BENCHMARKS.md,
// "Recovery after an outage").
//
// WGKIT_RECOVERY_SWEEP=1 runs the long sweep instead of the short CI set:
// the other outages and partitions of 1, 5, 10, 20, 30 and 60 s, three
// trials each (about ten minutes; WGKIT_RECOVERY_DURS, _TRIALS and
// _TUNINGS narrow or vary it, see TestRecoverySweep and namedTuning):
//
//	WGKIT_RECOVERY_SWEEP=1 go test -run TestRecoverySweep -timeout 30m -v ./netstack/

// bulk is a TCP stream that sends as fast as it can from one Net to a
// listener on another and counts the bytes that arrive.
type bulk struct {
	got  atomic.Int64
	conn net.Conn // the sending side
	stop func()
}

// startBulk opens a stream from `from` to to:port and keeps it busy until
// the returned bulk's stop is called (the test's cleanup calls it too).
func startBulk(t *testing.T, ctx context.Context, from, to *netstack.Net, addr netip.Addr, port int) *bulk {
	t.Helper()
	ln, err := to.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	b := &bulk{}
	var wg sync.WaitGroup
	accepted := make(chan net.Conn, 1)
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			b.got.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	c, err := from.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, uint16(port)).String())
	if err != nil {
		ln.Close()
		wg.Wait()
		t.Fatal(err)
	}
	b.conn = c
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	var once sync.Once
	b.stop = func() {
		once.Do(func() {
			c.Close()
			ln.Close()
			if rc, ok := <-accepted; ok {
				rc.Close()
			}
			wg.Wait()
		})
	}
	t.Cleanup(b.stop)
	return b
}

// rate returns the stream's throughput over the next d, in bytes per
// second.
func (b *bulk) rate(d time.Duration) float64 {
	n0 := b.got.Load()
	time.Sleep(d)
	return float64(b.got.Load()-n0) / d.Seconds()
}

// recovery samples the stream every 100 ms for up to limit and returns
// how long after the call a 500 ms window first carried at least half of
// before (bytes per second); ok is false if none did within limit. best
// is the highest rate of a window.
func (b *bulk) recovery(before float64, limit time.Duration) (d time.Duration, best float64, ok bool) {
	const step, window = 100 * time.Millisecond, 5 // window in steps
	start := time.Now()
	samples := []int64{b.got.Load()}
	for time.Since(start) < limit+window*step {
		time.Sleep(step)
		samples = append(samples, b.got.Load())
		if i := len(samples) - 1; i >= window {
			r := float64(samples[i]-samples[i-window]) / (window * step).Seconds()
			best = max(best, r)
			if r >= before/2 {
				return time.Duration(i-window) * step, best, true
			}
		}
	}
	return limit, best, false
}

// mib formats bytes per second as MiB/s.
func mib(r float64) string { return fmt.Sprintf("%.3g MiB/s", r/(1<<20)) }

// outage is one way to interrupt the path between peer 0 (the sender) and
// peer 1 of a two-peer network. It returns when the path is back.
type outage struct {
	name string
	// restarts is true if the outage ends the stream (a restarted peer has
	// a new stack): recovery is then measured on a new stream.
	restarts bool
	// keepalive is the network's PersistentKeepalive.
	keepalive time.Duration
	run       func(t *testing.T, nw *wgtest.Network)
}

func partition(d time.Duration) outage {
	return outage{
		name: "partition-" + d.String(),
		run: func(t *testing.T, nw *wgtest.Network) {
			nw.Partition(0, 1)
			time.Sleep(d)
			nw.Heal(0, 1)
		},
	}
}

// reSetPeer removes peer `of`'s entry for the other peer and sets it
// again, as a control plane re-applying a configuration does; the engine
// forgets the peer's session.
func reSetPeer(of int) outage {
	return outage{
		name: fmt.Sprintf("remove-set-peer-on-%d", of),
		run: func(t *testing.T, nw *wgtest.Network) {
			dev := nw.Peer(of).Net().Device()
			other := nw.Peer(1 - of)
			var entry wg.Peer
			for _, p := range nw.Peer(of).Config().Peers {
				if p.PublicKey == other.PublicKey() {
					entry = p
				}
			}
			entry.Endpoint = other.Endpoint().String()
			if err := dev.RemovePeer(other.PublicKey()); err != nil {
				t.Fatal(err)
			}
			if err := dev.SetPeer(entry); err != nil {
				t.Fatal(err)
			}
		},
	}
}

var outages = []outage{
	partition(3 * time.Second),
	// A Wi-Fi roam of the sender: gone for two seconds, back at a new
	// address, which the receiver learns from the first data packet.
	roam(0, 0),
	// A roam of the receiver, which sends nothing but ACKs: the sender
	// learns its new address only from a persistent keepalive (WireGuard
	// roams on authenticated packets from the roamed peer; without
	// keepalive an idle receiver is lost until it sends).
	roam(1, time.Second),
	reSetPeer(0),
	// The receiver's engine forgets the sender's session, which the
	// sender keeps using: recovery needs the handshake that SetPeer
	// starts for a peer with an endpoint and no session.
	reSetPeer(1),
	restart(0),
	// The restarted receiver has no session and the sender keeps using the
	// old one: the new stream needs the handshake that Open starts.
	restart(1),
}

// roam partitions the peers for 2 s and moves peer i to a new address
// before healing.
func roam(i int, keepalive time.Duration) outage {
	return outage{
		name:      fmt.Sprintf("roam-%d", i),
		keepalive: keepalive,
		run: func(t *testing.T, nw *wgtest.Network) {
			nw.Partition(0, 1)
			time.Sleep(2 * time.Second)
			nw.Roam(i)
			nw.Heal(0, 1)
		},
	}
}

// restart restarts peer i; the measured stream is a new one from peer 0.
func restart(i int) outage {
	return outage{
		name:     fmt.Sprintf("restart-%d", i),
		restarts: true,
		run: func(t *testing.T, nw *wgtest.Network) {
			if err := nw.Peer(i).Restart(); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// tuning changes a Net's TCP options from newStack's defaults, for the
// sweep's comparisons.
type tuning struct {
	name string
	opts []tcpip.SettableTransportProtocolOption
	// hold, if not nil, is how long the link holds reordered segments
	// (netstack.SetReorderHold); nil leaves the package default.
	hold *time.Duration
}

func (tu tuning) apply(t *testing.T, nets ...*netstack.Net) {
	t.Helper()
	for _, n := range nets {
		if tu.hold != nil {
			netstack.SetReorderHold(n, *tu.hold)
		}
		for _, o := range tu.opts {
			if err := netstack.SetTCPOption(n, o); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// trial runs one outage on a fresh two-peer network under a bulk stream
// and returns the rate before it and how long after the path returned the
// stream was back at half that rate.
func trial(t *testing.T, o outage, tu tuning, seed uint64) (before float64, d time.Duration, best float64, ok bool) {
	nw := wgtest.NewNetwork(t, 2, &wgtest.NetworkOptions{Seed: seed, PersistentKeepalive: o.keepalive})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := nw.Peer(0), nw.Peer(1)
	tu.apply(t, a.Net(), b.Net())
	s := startBulk(t, ctx, a.Net(), b.Net(), b.Addr(), 9100)
	// Let the stream leave slow start, then take the rate it runs at.
	time.Sleep(500 * time.Millisecond)
	before = s.rate(time.Second)
	if before == 0 {
		t.Fatal("the stream moved nothing before the outage")
	}
	o.run(t, nw)
	if o.restarts {
		s.stop()
		tu.apply(t, a.Net(), b.Net())
		s = startBulk(t, ctx, a.Net(), b.Net(), b.Addr(), 9101)
	}
	d, best, ok = s.recovery(before, 5*time.Second)
	return before, d, best, ok
}

// recoveryBound is how soon after the path returns the stream must carry
// half its earlier rate: the goal of 2 s plus a second of margin
// for a loaded CI machine. The failure this guards against is a stream
// stuck below 1% of its rate for tens of seconds.
const recoveryBound = 3 * time.Second

// raceRecoveryBound is recoveryBound under -race, which slows the stack
// several times over while CI runs other packages' race tests beside it:
// a roam once took 3.2 s there. It is the whole window trial watches, still
// far below the stall this guards against.
const raceRecoveryBound = 5 * time.Second

func TestRecoveryAfterOutage(t *testing.T) {
	if os.Getenv("WGKIT_RECOVERY_SWEEP") != "" {
		t.Skip("WGKIT_RECOVERY_SWEEP is set: TestRecoverySweep runs instead")
	}
	for _, o := range outages {
		t.Run(o.name, func(t *testing.T) {
			before, d, best, ok := trial(t, o, tuning{}, 1)
			t.Logf("before %s; back at half after %v (%v); best 500 ms after %s", mib(before), d, ok, mib(best))
			bound := recoveryBound
			if netstack.RaceEnabled {
				bound = raceRecoveryBound
			}
			if !ok || d > bound {
				t.Errorf("stream at %s before the outage was not back at half that rate within %v", mib(before), bound)
			}
		})
	}
}

// TestRecoverySweep measures the settings the defaults were chosen from;
// see the comment at the top of the file.
func TestRecoverySweep(t *testing.T) {
	if os.Getenv("WGKIT_RECOVERY_SWEEP") == "" {
		t.Skip("the sweep takes minutes; set WGKIT_RECOVERY_SWEEP=1 to run it")
	}
	tunings := sweepTunings(t)
	durs := []time.Duration{time.Second, 5 * time.Second, 10 * time.Second, 20 * time.Second, 30 * time.Second, 60 * time.Second}
	if s := os.Getenv("WGKIT_RECOVERY_DURS"); s != "" {
		durs = nil
		for _, f := range strings.Split(s, ",") {
			d, err := time.ParseDuration(f)
			if err != nil {
				t.Fatal(err)
			}
			durs = append(durs, d)
		}
	}
	trials := sweepTrials(t, 3)
	list := outages[1:]
	for _, d := range durs {
		list = append(list, partition(d))
	}
	for _, tu := range tunings {
		for _, o := range list {
			for i := range trials {
				t.Run(fmt.Sprintf("%s/%s/%d", tu.name, o.name, i), func(t *testing.T) {
					before, d, best, ok := trial(t, o, tu, uint64(i))
					t.Logf("RESULT tuning=%s outage=%s trial=%d before=%s recovered=%v after=%v best=%s", tu.name, o.name, i, mib(before), ok, d, mib(best))
				})
			}
		}
	}
}

// namedTuning returns the tuning called name: one of the names below,
// "minrto=D", "rack-minrto=D", "maxrto=D", "hold=D" (the link's hold
// of reordered segments; "nohold" is hold=0), "buf=MiB" (the send and
// receive buffers' maximum), or several joined by "+", applied in order
// ("rack+cubic").
func namedTuning(name string) (tuning, error) {
	if parts := strings.Split(name, "+"); len(parts) > 1 {
		tu := tuning{name: name}
		for _, p := range parts {
			pt, err := namedTuning(p)
			if err != nil {
				return tuning{}, err
			}
			tu.opts = append(tu.opts, pt.opts...)
			if pt.hold != nil {
				tu.hold = pt.hold
			}
		}
		return tu, nil
	}
	rack := tcpip.TCPRACKLossDetection
	norack := tcpip.TCPRecovery(0)
	maxRTO120 := tcpip.TCPMaxRTOOption(120 * time.Second)
	retries15 := tcpip.TCPMaxRetriesOption(15)
	minRTO200 := tcpip.TCPMinRTOOption(200 * time.Millisecond)
	reno := tcpip.CongestionControlOption("reno")
	cubic := tcpip.CongestionControlOption("cubic")
	nosack := tcpip.TCPSACKEnabled(false)
	var noHold time.Duration
	switch name {
	case "default":
		return tuning{name: name}, nil
	case "rack":
		return tuning{name: name, opts: []tcpip.SettableTransportProtocolOption{&rack}}, nil
	case "norack":
		return tuning{name: name, opts: []tcpip.SettableTransportProtocolOption{&norack}}, nil
	case "gvisor":
		// Stock's link hands segments to the stack as they come.
		return tuning{name: name, opts: []tcpip.SettableTransportProtocolOption{&rack, &minRTO200, &maxRTO120, &retries15}, hold: &noHold}, nil
	case "nohold":
		return tuning{name: name, hold: &noHold}, nil
	case "gvisor-norack":
		return tuning{name: name, opts: []tcpip.SettableTransportProtocolOption{&norack, &minRTO200, &maxRTO120, &retries15}}, nil
	case "rack-static":
		v := tcpip.TCPRACKLossDetection | tcpip.TCPRACKStaticReoWnd
		return tuning{name: name, opts: []tcpip.SettableTransportProtocolOption{&v}}, nil
	case "rack-nodupth":
		v := tcpip.TCPRACKLossDetection | tcpip.TCPRACKNoDupTh
		return tuning{name: name, opts: []tcpip.SettableTransportProtocolOption{&v}}, nil
	case "reno":
		return tuning{name: name, opts: []tcpip.SettableTransportProtocolOption{&reno}}, nil
	case "cubic":
		return tuning{name: name, opts: []tcpip.SettableTransportProtocolOption{&cubic}}, nil
	case "nosack":
		return tuning{name: name, opts: []tcpip.SettableTransportProtocolOption{&nosack}}, nil
	case "delay":
		v := tcpip.TCPDelayEnabled(true)
		return tuning{name: name, opts: []tcpip.SettableTransportProtocolOption{&v}}, nil
	case "nomoderate":
		v := tcpip.TCPModerateReceiveBufferOption(false)
		return tuning{name: name, opts: []tcpip.SettableTransportProtocolOption{&v}}, nil
	}
	if s, ok := strings.CutPrefix(name, "maxrto="); ok {
		d, err := time.ParseDuration(s)
		if err != nil {
			return tuning{}, err
		}
		v := tcpip.TCPMaxRTOOption(d)
		return tuning{name: name, opts: []tcpip.SettableTransportProtocolOption{&v}}, nil
	}
	if s, ok := strings.CutPrefix(name, "hold="); ok {
		d, err := time.ParseDuration(s)
		if err != nil {
			return tuning{}, err
		}
		return tuning{name: name, hold: &d}, nil
	}
	if s, ok := strings.CutPrefix(name, "buf="); ok {
		mb, err := strconv.Atoi(s)
		if err != nil || mb < 1 {
			return tuning{}, fmt.Errorf("tuning %s: want a whole number of MiB", name)
		}
		limit := mb << 20
		rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: min(limit, tcp.DefaultReceiveBufferSize), Max: limit}
		snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: min(limit, tcp.DefaultSendBufferSize), Max: limit}
		return tuning{name: name, opts: []tcpip.SettableTransportProtocolOption{&rcv, &snd}}, nil
	}
	// "minrto=D": the package defaults with a minimum RTO of D (gVisor's
	// is 200 ms); "rack-minrto=D": the same with RACK on.
	for prefix, opts := range map[string][]tcpip.SettableTransportProtocolOption{"minrto=": nil, "rack-minrto=": {&rack}} {
		if s, ok := strings.CutPrefix(name, prefix); ok {
			d, err := time.ParseDuration(s)
			if err != nil {
				return tuning{}, err
			}
			minRTO := tcpip.TCPMinRTOOption(d)
			return tuning{name: name, opts: append(opts, &minRTO)}, nil
		}
	}
	return tuning{}, errors.New("unknown tuning " + name)
}

// lossFaults are the paths of TestLossSweep: loss1 is 1 % loss with 1 %
// reordered, loss5 is 5 % loss, 5 % reordered and 1 % duplicated, both
// with 200 µs of jitter; long1 and long5 are loss1 and loss5 on a path
// of 20 ms round trip, plain1 and plain5 are 1 % and 5 % loss without
// reordering or jitter; WGKIT_LOSS_FAULTS selects these four.
var lossFaults = []struct {
	name string
	f    wgtest.Faults
}{
	{"loss1", wgtest.Faults{Loss: 0.01, Reorder: 0.01, Jitter: 200 * time.Microsecond}},
	{"loss5", wgtest.Faults{Loss: 0.05, Reorder: 0.05, Jitter: 200 * time.Microsecond, Duplicate: 0.01}},
	{"long1", wgtest.Faults{Loss: 0.01, Reorder: 0.01, Jitter: 200 * time.Microsecond, Delay: 10 * time.Millisecond}},
	{"long5", wgtest.Faults{Loss: 0.05, Reorder: 0.05, Jitter: 200 * time.Microsecond, Duplicate: 0.01, Delay: 10 * time.Millisecond}},
	{"plain1", wgtest.Faults{Loss: 0.01}},
	{"plain5", wgtest.Faults{Loss: 0.05}},
}

// lossResult is one transfer of TestLossSweep.
type lossResult struct {
	data, fin time.Duration // until the last byte arrived, until the FIN did
	n         int64
	err       error
}

// TestLossSweep measures a 16 MiB transfer under loss with reordering
// for the tunings named in WGKIT_RECOVERY_TUNINGS (default: the package
// defaults), WGKIT_RECOVERY_TRIALS runs each (default 4), on the faults
// named in WGKIT_LOSS_FAULTS (default: loss1,loss5): the time until the
// last byte arrived and until the sender's FIN did. The tunings take
// turns, trial by trial, so that the machine's load falls on all of them
// alike; at the end it reports each one's median, slowest, and slowest
// over median of the FIN times (a transfer that failed counts as
// slowest). It is skipped unless WGKIT_LOSS_SWEEP is set:
//
//	WGKIT_LOSS_SWEEP=1 WGKIT_RECOVERY_TUNINGS=default,gvisor WGKIT_RECOVERY_TRIALS=20 \
//	    WGKIT_LOSS_FAULTS=loss1 go test -run TestLossSweep -timeout 30m -v ./netstack/
func TestLossSweep(t *testing.T) {
	if os.Getenv("WGKIT_LOSS_SWEEP") == "" {
		t.Skip("the sweep takes minutes; set WGKIT_LOSS_SWEEP=1 to run it")
	}
	tunings := sweepTunings(t)
	trials := sweepTrials(t, 4)
	faults := lossFaults[:2]
	if s := os.Getenv("WGKIT_LOSS_FAULTS"); s != "" {
		faults = faults[:0:0]
		for _, name := range strings.Split(s, ",") {
			found := false
			for _, fl := range lossFaults {
				if fl.name == name {
					faults, found = append(faults, fl), true
				}
			}
			if !found {
				t.Fatalf("WGKIT_LOSS_FAULTS: unknown faults %q", name)
			}
		}
	}
	for _, fl := range faults {
		results := make(map[string][]lossResult)
		for i := range trials {
			for _, tu := range tunings {
				t.Run(fmt.Sprintf("%s/%s/%d", fl.name, tu.name, i), func(t *testing.T) {
					r := lossTransfer(t, fl.f, tu, uint64(i+1))
					results[tu.name] = append(results[tu.name], r)
					t.Logf("RESULT faults=%s tuning=%s trial=%d data=%v fin=%v bytes=%d err=%v", fl.name, tu.name, i, r.data.Round(time.Millisecond), r.fin.Round(time.Millisecond), r.n, r.err)
				})
			}
		}
		for _, tu := range tunings {
			med, slowest, failed := lossSummary(results[tu.name])
			t.Logf("SUMMARY faults=%s tuning=%s n=%d failed=%d median=%v slowest=%v slowest/median=%.2f",
				fl.name, tu.name, len(results[tu.name]), failed, med.Round(time.Millisecond), slowest.Round(time.Millisecond), float64(slowest)/float64(med))
		}
	}
}

// lossSummary returns the median and the slowest FIN time of rs and how
// many transfers failed; a failed transfer counts as the test's deadline.
func lossSummary(rs []lossResult) (median, slowest time.Duration, failed int) {
	ds := make([]time.Duration, 0, len(rs))
	for _, r := range rs {
		d := r.fin
		if r.err != nil || r.fin == 0 {
			failed++
			d = lossDeadline
		}
		ds = append(ds, d)
	}
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	median = ds[len(ds)/2]
	if len(ds)%2 == 0 {
		median = (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
	}
	return median, ds[len(ds)-1], failed
}

// lossDeadline bounds one transfer of TestLossSweep.
const lossDeadline = 80 * time.Second

// lossTransfer sends 16 MiB from one peer of a fresh network to the
// other under faults f, with tuning tu on both, and reports when the last
// byte and the FIN arrived.
func lossTransfer(t *testing.T, f wgtest.Faults, tu tuning, seed uint64) lossResult {
	const size = 16 << 20
	nw := wgtest.NewNetwork(t, 2, &wgtest.NetworkOptions{Seed: seed})
	ctx, cancel := context.WithTimeout(context.Background(), lossDeadline+10*time.Second)
	defer cancel()
	a, b := nw.Peer(0), nw.Peer(1)
	tu.apply(t, a.Net(), b.Net())
	if _, err := a.Net().Ping(ctx, b.Addr()); err != nil {
		t.Fatal(err)
	}
	ln, err := b.Net().Listen("tcp", ":9400")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	done := make(chan lossResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- lossResult{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(start.Add(lossDeadline))
		var r lossResult
		buf := make([]byte, 64<<10)
		for {
			k, err := c.Read(buf)
			r.n += int64(k)
			if r.n == size && r.data == 0 {
				r.data = time.Since(start)
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					r.fin = time.Since(start)
				} else {
					r.err = err
				}
				done <- r
				return
			}
		}
	}()
	nw.SetFaults(f)
	c, err := a.Net().DialContext(ctx, "tcp", netip.AddrPortFrom(b.Addr(), 9400).String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(start.Add(lossDeadline))
	buf := make([]byte, 64<<10)
	var werr error
	for sent := 0; sent < size && werr == nil; sent += len(buf) {
		_, werr = c.Write(buf)
	}
	if werr != nil {
		t.Logf("sender stuck: %s", netstack.TCPConnInfo(c))
	}
	c.Close()
	r := <-done
	if werr != nil {
		r.err = fmt.Errorf("send: %w; receive: %v", werr, r.err)
	}
	t.Logf("sender: %s", netstack.TCPRecoveryStats(a.Net()))
	return r
}

// sweepTunings returns the tunings named in WGKIT_RECOVERY_TUNINGS
// (comma-separated names of namedTuning), by default the package's own.
func sweepTunings(t *testing.T) []tuning {
	s := os.Getenv("WGKIT_RECOVERY_TUNINGS")
	if s == "" {
		return []tuning{{name: "default"}}
	}
	var tunings []tuning
	for _, name := range strings.Split(s, ",") {
		tu, err := namedTuning(name)
		if err != nil {
			t.Fatal(err)
		}
		tunings = append(tunings, tu)
	}
	return tunings
}

// sweepTrials returns WGKIT_RECOVERY_TRIALS, by default def.
func sweepTrials(t *testing.T, def int) int {
	s := os.Getenv("WGKIT_RECOVERY_TRIALS")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("WGKIT_RECOVERY_TRIALS=%q: %v", s, err)
	}
	return n
}
