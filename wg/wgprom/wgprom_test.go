package wgprom_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/wgkit/wgkit/wg"
	"github.com/wgkit/wgkit/wg/wgprom"
	"github.com/wgkit/wgkit/wg/wgtest"
)

// moveBytes sends n bytes from peer 0 to peer 1 over TCP and waits for
// them to arrive, so that both devices have counted traffic.
func moveBytes(t *testing.T, nw *wgtest.Network, n int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ln, err := nw.Peer(1).Net().Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		k, _ := io.Copy(io.Discard, c)
		got <- k
	}()
	c, err := nw.Peer(0).Net().DialContext(ctx, "tcp", nw.Peer(1).Addr().String()+":9000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(c, zeros{}, n); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case k := <-got:
		if k != n {
			t.Fatalf("received %d bytes, want %d", k, n)
		}
	case <-ctx.Done():
		t.Fatal("transfer did not finish")
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func TestCollectorLint(t *testing.T) {
	nw := wgtest.NewNetwork(t, 2, &wgtest.NetworkOptions{Seed: 1})
	moveBytes(t, nw, 1<<16)
	c := wgprom.New(nil)
	if err := c.Add("wk0", nw.Peer(0).Net().Device()); err != nil {
		t.Fatal(err)
	}
	if err := c.Add("wk1", nw.Peer(1).Net().Device()); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	// A pedantic registry checks that every metric collected was described.
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c, "wireguard_device_info"); n != 2 {
		t.Errorf("wireguard_device_info: %d series, want 2", n)
	}
}

// TestCollectorExporterFormat checks the metric names, labels and info
// values against what mdlayher's wireguard_exporter writes for the same
// device, so that dashboards built for it work unchanged.
func TestCollectorExporterFormat(t *testing.T) {
	nw := wgtest.NewNetwork(t, 2, &wgtest.NetworkOptions{Seed: 2})
	moveBytes(t, nw, 1000)
	dev := nw.Peer(0).Net().Device()
	peer := nw.Peer(1)
	c := wgprom.New(&wgprom.Options{PeerNames: map[string]string{peer.PublicKey().String(): "bob"}})
	if err := c.Add("wk0", dev); err != nil {
		t.Fatal(err)
	}
	st := dev.Peers()
	if len(st) != 1 {
		t.Fatalf("Peers: %d peers, want 1", len(st))
	}
	var allowed []string
	for _, p := range st[0].AllowedIPs {
		allowed = append(allowed, p.String())
	}
	want := fmt.Sprintf(`# HELP wireguard_device_info Metadata about a device.
# TYPE wireguard_device_info gauge
wireguard_device_info{device="wk0",public_key=%q} 1
# HELP wireguard_peer_info Metadata about a peer. The public_key label on peer metrics refers to the peer's public key; not the device's public key.
# TYPE wireguard_peer_info gauge
wireguard_peer_info{allowed_ips=%q,device="wk0",endpoint=%q,name="bob",public_key=%q} 1
`, dev.PublicKey(), strings.Join(allowed, ","), st[0].Endpoint, peer.PublicKey())
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "wireguard_device_info", "wireguard_peer_info"); err != nil {
		t.Error(err)
	}
	hs := gather(t, c, "wireguard_peer_last_handshake_seconds")
	if got, want := hs[peer.PublicKey()], float64(st[0].LastHandshake.Unix()); got != want || got == 0 {
		t.Errorf("last handshake: %v, want %v (non-zero)", got, want)
	}
}

// TestCollectorCountersMatchPeers checks that the byte counters are the
// ones Device.Peers reports: read between two Peers calls, each counter
// lies between the two readings.
func TestCollectorCountersMatchPeers(t *testing.T) {
	nw := wgtest.NewNetwork(t, 2, &wgtest.NetworkOptions{Seed: 3})
	moveBytes(t, nw, 1<<20)
	dev := nw.Peer(0).Net().Device()
	c := wgprom.New(nil)
	if err := c.Add("wk0", dev); err != nil {
		t.Fatal(err)
	}
	before := dev.Peers()
	rx := gather(t, c, "wireguard_peer_receive_bytes_total")
	tx := gather(t, c, "wireguard_peer_transmit_bytes_total")
	after := dev.Peers()
	for i, p := range before {
		lo, hi := p, after[i]
		if got := rx[p.PublicKey]; got < float64(lo.RxBytes) || got > float64(hi.RxBytes) {
			t.Errorf("rx %v: %v, want between %d and %d", p.PublicKey, got, lo.RxBytes, hi.RxBytes)
		}
		if got := tx[p.PublicKey]; got < float64(lo.TxBytes) || got > float64(hi.TxBytes) || got < 1<<20 {
			t.Errorf("tx %v: %v, want between %d and %d and at least 1 MiB", p.PublicKey, got, lo.TxBytes, hi.TxBytes)
		}
	}
}

func TestCollectorAddRemove(t *testing.T) {
	nw := wgtest.NewNetwork(t, 1, &wgtest.NetworkOptions{Seed: 4})
	dev := nw.Peer(0).Net().Device()
	c := wgprom.New(nil)
	for _, tc := range []struct {
		name string
		dev  *wg.Device
		ok   bool
	}{
		{"wk0", dev, true},
		{"wk0", dev, false}, // taken
		{"", dev, false},
		{"wk1", nil, false},
	} {
		if err := c.Add(tc.name, tc.dev); (err == nil) != tc.ok {
			t.Errorf("Add(%q, %v): %v, want ok=%v", tc.name, tc.dev != nil, err, tc.ok)
		} else if err != nil && !strings.HasPrefix(err.Error(), "wgprom: ") {
			t.Errorf("error %q lacks the package prefix", err)
		}
	}
	if n := testutil.CollectAndCount(c); n != 1 {
		t.Errorf("with one peerless device: %d series, want 1", n)
	}
	c.Remove("wk0")
	c.Remove("nothing")
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Errorf("after Remove: %d series, want 0", n)
	}
	if err := c.Add("wk0", dev); err != nil {
		t.Errorf("Add after Remove: %v", err)
	}
	long := strings.Repeat("n", 10000)
	if err := c.Add(long, dev); err != nil {
		t.Fatalf("Add of a long name: %v", err)
	}
	if err := c.Add(long, dev); err == nil {
		t.Error("Add of a long name again: no error")
	} else if len(err.Error()) > 100 {
		t.Errorf("Add of a long name again: %d-byte error %.100q...; want one quoting a short prefix", len(err.Error()), err)
	}
}

// gather returns the values of the named metric by public_key label.
func gather(t *testing.T, c prometheus.Collector, name string) map[wg.Key]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[wg.Key]float64)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var key wg.Key
			for _, l := range m.GetLabel() {
				if l.GetName() == "public_key" {
					if key, err = wg.ParseKey(l.GetValue()); err != nil {
						t.Fatal(err)
					}
				}
			}
			out[key] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestCollectorWgkitMetrics checks wgkit's own metrics: the per-peer
// counters follow Device.Peers, and a backend's counters are reported as
// its stats function gives them, router figures only where it has them.
func TestCollectorWgkitMetrics(t *testing.T) {
	nw := wgtest.NewNetwork(t, 2, &wgtest.NetworkOptions{Seed: 5})
	moveBytes(t, nw, 1000)
	tnet := nw.Peer(0).Net()
	c := wgprom.New(nil)
	stats := wgprom.BackendStats{PacketsDropped: 7, CaptureDropped: 3}
	if err := c.AddBackend("wk0", tnet.Device(), func() wgprom.BackendStats { return stats }); err != nil {
		t.Fatal(err)
	}
	st := tnet.Device().Peers()
	attempts := gather(t, c, "wgkit_peer_handshake_attempts_total")
	after := tnet.Device().Peers()
	pub := st[0].PublicKey
	if got := attempts[pub]; got < float64(st[0].HandshakeAttempts) || got > float64(after[0].HandshakeAttempts) || got == 0 && st[0].HandshakeAttempts != 0 {
		t.Errorf("handshake attempts %v, want between %d and %d", got, st[0].HandshakeAttempts, after[0].HandshakeAttempts)
	}
	want := `# HELP wgkit_capture_dropped_total Packets missing from the packet capture.
# TYPE wgkit_capture_dropped_total counter
wgkit_capture_dropped_total{device="wk0"} 3
# HELP wgkit_packets_dropped_total Packets the backend dropped between its stack and the engine.
# TYPE wgkit_packets_dropped_total counter
wgkit_packets_dropped_total{device="wk0"} 7
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "wgkit_packets_dropped_total", "wgkit_capture_dropped_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "wgkit_forward_flows"); n != 0 {
		t.Errorf("no router: %d wgkit_forward_flows series, want 0", n)
	}
	stats.Forward = &wgprom.ForwardStats{TCPFlows: 2, UDPFlows: 5, Relayed: 11}
	want = `# HELP wgkit_forward_flows Flows a router forwards now, by protocol.
# TYPE wgkit_forward_flows gauge
wgkit_forward_flows{device="wk0",proto="tcp"} 2
wgkit_forward_flows{device="wk0",proto="udp"} 5
# HELP wgkit_forward_relayed_packets_total Packets a router relayed from one peer to another.
# TYPE wgkit_forward_relayed_packets_total counter
wgkit_forward_relayed_packets_total{device="wk0"} 11
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "wgkit_forward_flows", "wgkit_forward_relayed_packets_total"); err != nil {
		t.Error(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
