package benchmarks

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/wgkit/wgkit/wg"
)

// manyPeersConfig is a device with n peers, each with one /32 (in
// 10.64.0.0/10) and no endpoint, so that nothing is sent: the benchmarks
// measure the cost of holding and changing peers, not of traffic.
func manyPeersConfig(tb testing.TB, n int) *wg.Config {
	tb.Helper()
	priv, err := wg.GeneratePrivateKey()
	mustNoErr(tb, err, "generate key")
	cfg := &wg.Config{Interface: wg.Interface{PrivateKey: priv}}
	for i := range n {
		k, err := wg.GeneratePrivateKey()
		mustNoErr(tb, err, "generate key")
		a := netip.AddrFrom4([4]byte{10, byte(64 + i>>16), byte(i >> 8), byte(i)})
		cfg.Peers = append(cfg.Peers, wg.Peer{PublicKey: k.PublicKey(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(a, 32)}})
	}
	return cfg
}

// scaleDevice is one engine with many peers, stock or wgkit.
type scaleDevice interface {
	peers() int                   // reads every peer's status; returns the count
	setPeer(p wg.Peer) error      // changes one peer
	reconfigure(*wg.Config) error // applies a whole configuration
	close()
}

type stockScale struct{ dev *device.Device }

func openStockScale(tb testing.TB, cfg *wg.Config) scaleDevice {
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	if err := dev.IpcSet(stockUAPI(cfg)); err != nil {
		dev.Close()
		tb.Fatalf("stock: configure: %v", err)
	}
	return stockScale{dev}
}

func (s stockScale) peers() int {
	text, err := s.dev.IpcGet()
	if err != nil {
		return 0
	}
	return strings.Count(text, "public_key=")
}

func (s stockScale) setPeer(p wg.Peer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\nreplace_allowed_ips=true\n", hex.EncodeToString(p.PublicKey[:]))
	for _, a := range p.AllowedIPs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", a)
	}
	return s.dev.IpcSet(b.String())
}

// reconfigure is what a user of plain wireguard-go does to apply a new
// configuration: the whole UAPI text with replace_peers.
func (s stockScale) reconfigure(cfg *wg.Config) error {
	return s.dev.IpcSet("replace_peers=true\n" + stockUAPI(cfg))
}

func (s stockScale) close() {
	s.dev.Close()
	<-s.dev.Wait()
}

type wgkitScale struct{ dev *wg.Device }

func openWgkitScale(tb testing.TB, cfg *wg.Config) scaleDevice {
	dev, err := wg.NewDevice(tuntest.NewChannelTUN().TUN(), cfg, nil)
	mustNoErr(tb, err, "wgkit: new device")
	return wgkitScale{dev}
}

func (w wgkitScale) peers() int                       { return len(w.dev.Peers()) }
func (w wgkitScale) setPeer(p wg.Peer) error          { return w.dev.SetPeer(p) }
func (w wgkitScale) reconfigure(cfg *wg.Config) error { return w.dev.Reconfigure(cfg) }
func (w wgkitScale) close()                           { w.dev.Close() }

var scaleImpls = []struct {
	name string
	open func(testing.TB, *wg.Config) scaleDevice
}{
	{"stock", openStockScale},
	{"wgkit", openWgkitScale},
}

// BenchmarkManyPeers times what a device with many peers costs: opening it
// (and the heap it holds per peer), reading every peer's status, changing
// one peer with SetPeer followed by a route lookup (so that a table rebuilt
// after the change is paid for), and Reconfigure with one peer changed
// (stock: the whole UAPI text with replace_peers, as a user of plain
// wireguard-go applies a configuration). setpeer and reconfigure also
// report cpu-ns/op, the process's CPU time per call, which counts the
// work a call leaves to the device's goroutines (the watcher) and is
// steadier than the wall time on a shared machine; they start timing
// once the device settled (its first poll of the engine and initiations
// done). Run op=open with -benchtime 3x or so (one open of 10 000 peers
// takes about a second) and the others with a few hundred iterations.
// op=clone, the copy of the Config (no device), is the scale for
// reconfigure, which reads the whole Config it is given.
func BenchmarkManyPeers(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		cfg := manyPeersConfig(b, n)
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			for _, im := range scaleImpls {
				b.Run("op=open/impl="+im.name, func(b *testing.B) {
					before := heapInUse()
					var held uint64
					for b.Loop() {
						d := im.open(b, cfg)
						b.StopTimer()
						held = heapInUse() - min(before, heapInUse())
						d.close()
						b.StartTimer()
					}
					b.ReportMetric(float64(held)/float64(n), "heap-B/peer")
				})
			}
			for _, im := range scaleImpls {
				b.Run("op=peers/impl="+im.name, func(b *testing.B) {
					d := im.open(b, cfg)
					defer d.close()
					for b.Loop() {
						if got := d.peers(); got != n {
							b.Fatalf("%d peers, want %d", got, n)
						}
					}
				})
			}
			for _, im := range scaleImpls {
				b.Run("op=setpeer/impl="+im.name, func(b *testing.B) {
					d := im.open(b, cfg)
					defer d.close()
					settle(n)
					p := cfg.Peers[n/2]
					alt := []netip.Prefix{p.AllowedIPs[0], netip.MustParsePrefix("100.64.0.1/32")}
					var lookup func()
					if w, ok := d.(wgkitScale); ok {
						lookup = func() {
							if _, ok := w.dev.PeerFor(p.AllowedIPs[0].Addr()); !ok {
								b.Fatal("PeerFor found no peer")
							}
						}
					}
					if lookup != nil {
						lookup() // the first lookup builds the table
					}
					i := 0
					b.ReportAllocs()
					cpu0 := cpuTime(b)
					for b.Loop() {
						q := p
						if i++; i%2 == 0 {
							q.AllowedIPs = alt
						}
						if err := d.setPeer(q); err != nil {
							b.Fatal(err)
						}
						if lookup != nil {
							lookup()
						}
					}
					reportCPU(b, cpu0)
				})
			}
			for _, im := range scaleImpls {
				b.Run("op=reconfigure/impl="+im.name, func(b *testing.B) {
					d := im.open(b, cfg)
					defer d.close()
					alt := cfg.Clone()
					alt.Peers[n/2].AllowedIPs = append(alt.Peers[n/2].AllowedIPs, netip.MustParsePrefix("100.64.0.1/32"))
					settle(n)
					i := 0
					b.ReportAllocs()
					cpu0 := cpuTime(b)
					for b.Loop() {
						c := cfg
						if i++; i%2 == 0 {
							c = alt
						}
						if err := d.reconfigure(c); err != nil {
							b.Fatal(err)
						}
					}
					reportCPU(b, cpu0)
				})
			}
			// The scale for reconfigure: copying the Config, which a
			// caller that changes one peer of a config it keeps pays
			// before it calls Reconfigure.
			b.Run("op=clone", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if c := cfg.Clone(); len(c.Peers) != n {
						b.Fatalf("%d peers cloned, want %d", len(c.Peers), n)
					}
				}
			})
		})
	}
}

// settle waits for a device of n peers just opened to finish its start-up
// work (the watcher's first read of every peer, the initiations it
// sends), so that a benchmark of one call does not time it, and collects
// the garbage of the set-up.
func settle(n int) {
	time.Sleep(50*time.Millisecond + time.Duration(n)*10*time.Microsecond)
	runtime.GC()
}

// reportCPU reports the process's CPU time since cpu0 per iteration.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkPeerFor is the route lookup a netstack dial makes, on a
// device with 10 and 10 000 peers. Stock wireguard-go has no such call (its
// table is internal), so there is no impl=stock side.
func BenchmarkPeerFor(b *testing.B) {
	for _, n := range []int{10, 10000} {
		cfg := manyPeersConfig(b, n)
		b.Run(fmt.Sprintf("peers=%d/impl=wgkit", n), func(b *testing.B) {
			d := openWgkitScale(b, cfg).(wgkitScale)
			defer d.close()
			addr := cfg.Peers[n/2].AllowedIPs[0].Addr()
			for b.Loop() {
				if _, ok := d.dev.PeerFor(addr); !ok {
					b.Fatal("PeerFor found no peer")
				}
			}
		})
	}
}

// BenchmarkManyTunnels opens 100 tunnels in one process (50 server and
// client pairs over loopback UDP) and reports the heap and goroutines
// each holds when idle, then the peak heap per tunnel while every pair
// moves 1 MiB at once.
func BenchmarkManyTunnels(b *testing.B) {
	const pairs = 50
	const perPair = 1 << 20
	forEachImpl(b, func(b *testing.B, im impl) {
		for b.Loop() {
			b.StopTimer()
			before := heapInUse()
			goroutines := runtime.NumGoroutine()
			var servers, clients []tunnel
			for range pairs {
				k := newKeys(b)
				s := im.open(b, serverConfig(k))
				servers = append(servers, s)
				clients = append(clients, im.open(b, clientConfig(k, s.listenPort())))
			}
			time.Sleep(100 * time.Millisecond) // let start-up goroutines settle
			idle := heapInUse()
			idleG := runtime.NumGoroutine()
			var stops []func()
			for _, s := range servers {
				l, err := s.listen(netip.AddrPortFrom(serverAddr, 9))
				mustNoErr(b, err, "listen")
				stops = append(stops, sinkServer(l, perPair))
			}
			b.StartTimer()
			sampler := startHeapSampler()
			var wg sync.WaitGroup
			errs := make(chan error, pairs)
			for _, c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- sendOnce(c, perPair)
				}()
			}
			wg.Wait()
			peak := sampler.stop()
			b.StopTimer()
			close(errs)
			for err := range errs {
				mustNoErr(b, err, "transfer")
			}
			for _, stop := range stops {
				stop()
			}
			for i := range servers {
				clients[i].close()
				servers[i].close()
			}
			b.ReportMetric(float64(int64(idle)-int64(before))/(2*pairs), "idle-heap-B/tunnel")
			b.ReportMetric(float64(idleG-goroutines)/(2*pairs), "goroutines/tunnel")
			b.ReportMetric(float64(int64(peak)-int64(before))/(2*pairs), "busy-peak-heap-B/tunnel")
			b.StartTimer()
		}
	})
}

// sendOnce dials the server's sink on port 9 through c, sends n bytes and
// waits for the sink's one-byte answer.
func sendOnce(c tunnel, n int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := c.dial(ctx, netip.AddrPortFrom(serverAddr, 9))
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.CopyN(conn, zeroReader{}, n); err != nil {
		return err
	}
	var ack [1]byte
	_, err = io.ReadFull(conn, ack[:])
	return err
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }
