// Package wgprom exports the state of wgkit devices as Prometheus metrics.
//
// A [Collector] reports one or more [wg.Device] values under the metric
// names and labels of mdlayher's wireguard_exporter, so dashboards and
// alerts built for kernel WireGuard work unchanged on wgkit tunnels:
//
//	wireguard_device_info{device, public_key}                            1
//	wireguard_peer_info{device, public_key, allowed_ips, endpoint, name} 1
//	wireguard_peer_receive_bytes_total{device, public_key}
//	wireguard_peer_transmit_bytes_total{device, public_key}
//	wireguard_peer_last_handshake_seconds{device, public_key}
//
// On peer metrics public_key is the peer's key; on wireguard_device_info it
// is the device's own.
//
// wgkit's own metrics start with wgkit_: per peer, from [wg.PeerStatus],
//
//	wgkit_peer_handshake_attempts_total{device, public_key}
//	wgkit_peer_handshake_failures_total{device, public_key}
//	wgkit_peer_endpoint_changes_total{device, public_key}
//
// and, for a device added with [Collector.AddBackend], its backend's
// counters ([BackendStats]):
//
//	wgkit_packets_dropped_total{device}
//	wgkit_capture_dropped_total{device}
//	wgkit_forward_flows{device, proto}        proto "tcp" or "udp"
//	wgkit_forward_pending_dials{device}
//	wgkit_forward_refused_total{device}
//	wgkit_forward_dropped_total{device}
//	wgkit_forward_dial_errors_total{device}
//	wgkit_forward_relayed_packets_total{device}
//
// Register the collector with a prometheus.Registerer and serve it with
// promhttp:
//
//	c := wgprom.New(nil)
//	c.Add("wg0", tnet.Device())
//	prometheus.MustRegister(c)
//	http.Handle("/metrics", promhttp.Handler())
//
// The core wg package does not import Prometheus; only this one does.
package wgprom

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wgkit/wgkit/wg"
)

// Options are the optional settings of New. A nil *Options means the
// defaults.
type Options struct {
	// PeerNames maps a peer's public key (base64, as wg(8) prints it) to a
	// friendly name, the value of wireguard_peer_info's name label. A peer
	// without an entry gets "". nil names no peer. The map is copied.
	PeerNames map[string]string
}

// BackendStats are the counters of a backend beyond its device's, for
// AddBackend. For a netstack tunnel they come from netstack.Net's Stats
// and ForwardStats:
//
//	c.AddBackend("wk0", tnet.Device(), func() wgprom.BackendStats {
//		s, f := tnet.Stats(), tnet.ForwardStats()
//		return wgprom.BackendStats{
//			PacketsDropped: s.LinkDropped, CaptureDropped: s.CaptureDropped,
//			Forward: &wgprom.ForwardStats{TCPFlows: f.TCPFlows, UDPFlows: f.UDPFlows,
//				PendingDials: f.PendingDials, Refused: f.Refused, Dropped: f.Dropped,
//				DialErrors: f.DialErrors, Relayed: f.Relayed},
//		}
//	})
type BackendStats struct {
	// PacketsDropped counts packets the backend dropped between its
	// stack and the engine (netstack: Stats.LinkDropped).
	PacketsDropped uint64
	// CaptureDropped counts packets missing from a packet capture
	// (netstack: Stats.CaptureDropped).
	CaptureDropped uint64
	// Forward holds router mode's figures; nil reports none (a backend
	// that does not forward).
	Forward *ForwardStats
}

// ForwardStats are the figures of a netstack router (netstack.ForwardStats).
type ForwardStats struct {
	// TCPFlows and UDPFlows are the forwarded flows open now.
	TCPFlows, UDPFlows int
	// PendingDials are the TCP flows whose upstream is being dialled.
	PendingDials int
	// Refused, Dropped and DialErrors count flows refused by policy,
	// dropped over a cap, and whose upstream dial failed.
	Refused, Dropped, DialErrors uint64
	// Relayed counts packets relayed from one peer to another.
	Relayed uint64
}

// Collector is a prometheus.Collector for wgkit devices. Create it with
// New and add devices with Add. Its methods are safe for concurrent use;
// Collect reads each device's status (Device.Peers) once per scrape.
type Collector struct {
	peerNames map[string]string // immutable

	deviceInfo, peerInfo, peerRx, peerTx, peerHandshake *prometheus.Desc

	// wgkit's own; see the package documentation.
	hsAttempts, hsFailures, endpointChanges           *prometheus.Desc
	dropped, captureDropped, fwdFlows, fwdPending     *prometheus.Desc
	fwdRefused, fwdDropped, fwdDialErrors, fwdRelayed *prometheus.Desc

	mu      sync.Mutex
	devices map[string]*source // by device name; guarded by mu
}

// source is one device added to a Collector, with its backend's
// counters (nil: none).
type source struct {
	dev   *wg.Device
	stats func() BackendStats
}

var _ prometheus.Collector = (*Collector)(nil)

// New returns a Collector with no devices. nil opts means defaults.
func New(opts *Options) *Collector {
	if opts == nil {
		opts = &Options{}
	}
	names := make(map[string]string, len(opts.PeerNames))
	for k, v := range opts.PeerNames {
		names[k] = v
	}
	// Per-peer metrics are keyed on the device too: one peer may belong
	// to several devices.
	labels := []string{"device", "public_key"}
	return &Collector{
		peerNames: names,
		deviceInfo: prometheus.NewDesc("wireguard_device_info",
			"Metadata about a device.", labels, nil),
		peerInfo: prometheus.NewDesc("wireguard_peer_info",
			"Metadata about a peer. The public_key label on peer metrics refers to the peer's public key; not the device's public key.",
			append(slices.Clone(labels), "allowed_ips", "endpoint", "name"), nil),
		peerRx: prometheus.NewDesc("wireguard_peer_receive_bytes_total",
			"Number of bytes received from a given peer.", labels, nil),
		peerTx: prometheus.NewDesc("wireguard_peer_transmit_bytes_total",
			"Number of bytes transmitted to a given peer.", labels, nil),
		peerHandshake: prometheus.NewDesc("wireguard_peer_last_handshake_seconds",
			"UNIX timestamp for the last handshake with a given peer.", labels, nil),
		hsAttempts: prometheus.NewDesc("wgkit_peer_handshake_attempts_total",
			"Handshake initiations the device sent to a given peer.", labels, nil),
		hsFailures: prometheus.NewDesc("wgkit_peer_handshake_failures_total",
			"Handshake initiations to a given peer that got no answer in time.", labels, nil),
		endpointChanges: prometheus.NewDesc("wgkit_peer_endpoint_changes_total",
			"Times a given peer's endpoint changed (roaming or re-resolution).", labels, nil),
		dropped: prometheus.NewDesc("wgkit_packets_dropped_total",
			"Packets the backend dropped between its stack and the engine.", []string{"device"}, nil),
		captureDropped: prometheus.NewDesc("wgkit_capture_dropped_total",
			"Packets missing from the packet capture.", []string{"device"}, nil),
		fwdFlows: prometheus.NewDesc("wgkit_forward_flows",
			"Flows a router forwards now, by protocol.", []string{"device", "proto"}, nil),
		fwdPending: prometheus.NewDesc("wgkit_forward_pending_dials",
			"Forwarded TCP flows whose upstream is being dialled.", []string{"device"}, nil),
		fwdRefused: prometheus.NewDesc("wgkit_forward_refused_total",
			"Flows a router refused by policy.", []string{"device"}, nil),
		fwdDropped: prometheus.NewDesc("wgkit_forward_dropped_total",
			"Flows a router dropped over a cap.", []string{"device"}, nil),
		fwdDialErrors: prometheus.NewDesc("wgkit_forward_dial_errors_total",
			"Forwarded flows whose upstream dial failed.", []string{"device"}, nil),
		fwdRelayed: prometheus.NewDesc("wgkit_forward_relayed_packets_total",
			"Packets a router relayed from one peer to another.", []string{"device"}, nil),
		devices: make(map[string]*source),
	}
}

// Add reports d under the given device name (the device label), such as
// the tunnel's interface name. A name may be added once (errors quote at
// most its first 40 bytes); add a device
// again under the same name after Remove. A closed device reports its
// wireguard_device_info line and no peers.
func (c *Collector) Add(name string, d *wg.Device) error {
	return c.add(name, &source{dev: d})
}

// AddBackend is Add with a function that reports the backend's own
// counters at each scrape (see BackendStats); stats must be cheap and
// safe for concurrent use. A nil stats is Add.
func (c *Collector) AddBackend(name string, d *wg.Device, stats func() BackendStats) error {
	return c.add(name, &source{dev: d, stats: stats})
}

func (c *Collector) add(name string, s *source) error {
	if name == "" {
		return errors.New("wgprom: add: empty device name")
	}
	if s.dev == nil {
		return fmt.Errorf("wgprom: add %.40q: nil device", name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.devices[name]; ok {
		return fmt.Errorf("wgprom: add %.40q: device name already in use", name)
	}
	c.devices[name] = s
	return nil
}

// Remove stops reporting the device added under name. Removing a name
// that is not there does nothing.
func (c *Collector) Remove(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.devices, name)
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.deviceInfo, c.peerInfo, c.peerRx, c.peerTx, c.peerHandshake,
		c.hsAttempts, c.hsFailures, c.endpointChanges,
		c.dropped, c.captureDropped, c.fwdFlows, c.fwdPending,
		c.fwdRefused, c.fwdDropped, c.fwdDialErrors, c.fwdRelayed,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	names := make([]string, 0, len(c.devices))
	srcs := make([]*source, 0, len(c.devices))
	for name, s := range c.devices {
		names = append(names, name)
		srcs = append(srcs, s)
	}
	c.mu.Unlock()
	// Read devices without the lock: Peers may take a while with many
	// peers, and Add or Remove should not wait for a scrape.
	for i, s := range srcs {
		c.collectDevice(ch, names[i], s)
	}
}

func (c *Collector) collectDevice(ch chan<- prometheus.Metric, name string, s *source) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(c.deviceInfo, 1, name, s.dev.PublicKey().String())
	for _, p := range s.dev.Peers() {
		pub := p.PublicKey.String()
		endpoint := ""
		if p.Endpoint.IsValid() {
			endpoint = p.Endpoint.String()
		}
		gauge(c.peerInfo, 1, name, pub, allowedIPs(p), endpoint, c.peerNames[pub])
		counter(c.peerRx, float64(p.RxBytes), name, pub)
		counter(c.peerTx, float64(p.TxBytes), name, pub)
		var last float64 // 0 until the first handshake, as the exporter reports it
		if !p.LastHandshake.IsZero() {
			last = float64(p.LastHandshake.Unix())
		}
		gauge(c.peerHandshake, last, name, pub)
		counter(c.hsAttempts, float64(p.HandshakeAttempts), name, pub)
		counter(c.hsFailures, float64(p.HandshakeFailures), name, pub)
		counter(c.endpointChanges, float64(p.EndpointChanges), name, pub)
	}
	if s.stats == nil {
		return
	}
	st := s.stats()
	counter(c.dropped, float64(st.PacketsDropped), name)
	counter(c.captureDropped, float64(st.CaptureDropped), name)
	if f := st.Forward; f != nil {
		gauge(c.fwdFlows, float64(f.TCPFlows), name, "tcp")
		gauge(c.fwdFlows, float64(f.UDPFlows), name, "udp")
		gauge(c.fwdPending, float64(f.PendingDials), name)
		counter(c.fwdRefused, float64(f.Refused), name)
		counter(c.fwdDropped, float64(f.Dropped), name)
		counter(c.fwdDialErrors, float64(f.DialErrors), name)
		counter(c.fwdRelayed, float64(f.Relayed), name)
	}
}

// allowedIPs formats a peer's AllowedIPs as the exporter does: comma
// separated, IPv4 before IPv6, shorter prefixes first.
func allowedIPs(p wg.PeerStatus) string {
	ps := slices.Clone(p.AllowedIPs)
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if a.Addr().Is4() != b.Addr().Is4() {
			if a.Addr().Is4() {
				return -1
			}
			return 1
		}
		if a.Bits() != b.Bits() {
			return a.Bits() - b.Bits()
		}
		return a.Addr().Compare(b.Addr())
	})
	s := make([]string, len(ps))
	for i, pfx := range ps {
		s[i] = pfx.String()
	}
	return strings.Join(s, ",")
}
