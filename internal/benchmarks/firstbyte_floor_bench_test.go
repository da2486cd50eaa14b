package benchmarks

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgkit/wgkit/internal/udpbind"
)

// BenchmarkFirstByteFloor measures, in one run with the first byte of
// both implementations (impl=stock, impl=wgkit: BenchmarkNetstackFirstByte's
// loop), the two parts of wgkit's first byte that its backend cannot
// shorten without changing wireguard-go:
//
//   - part=engine: wireguard-go alone, from device.NewDevice to the
//     client's engine having consumed the server's handshake response:
//     its set-up, IpcSet, Up on wgkit's UDP Bind, the initiation, and the
//     Noise handshake (8 X25519 operations across the two engines) with
//     a wgkit server tunnel, over loopback. The client has a TUN that
//     carries nothing, so no TCP/IP stack is built or run.
//   - part=session: on a tunnel pair whose session is already keyed, a
//     new TCP connection and one echoed byte (the TCP handshake and one
//     round trip through both engines).
//
// The first byte cannot take less than their sum; dividing it by
// impl=stock's time gives the best ratio wgkit could reach on this path.
func BenchmarkFirstByteFloor(b *testing.B) {
	forEachImpl(b, firstByte)
	b.Run("part=engine", func(b *testing.B) {
		k := newKeys(b)
		server := openWgkit(b, serverConfig(k))
		defer server.close()
		uapi := stockUAPI(clientConfig(k, server.listenPort()))
		peerKey := device.NoisePublicKey(k.server.PublicKey())
		times := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			done := make(chan struct{}, 1)
			dev := device.NewDevice(newQuietTUN(), udpbind.New(nil), handshakeLogger(done))
			if err := dev.IpcSet(uapi); err != nil {
				dev.Close()
				b.Fatalf("engine: configure: %v", err)
			}
			if err := dev.Up(); err != nil {
				dev.Close()
				b.Fatalf("engine: up: %v", err)
			}
			if err := dev.LookupPeer(peerKey).SendHandshakeInitiation(false); err != nil {
				dev.Close()
				b.Fatalf("engine: initiate: %v", err)
			}
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				dev.Close()
				b.Fatal("engine: no handshake response in 20 s")
			}
			times = append(times, time.Since(start))
			b.StopTimer()
			dev.Close()
			// The next client reuses the key: see firstByte's pause.
			time.Sleep(40 * time.Millisecond)
			b.StartTimer()
		}
		reportMedian(b, times)
	})
	b.Run("part=session", func(b *testing.B) {
		server, client := openPair(b, impls[1])
		l, err := server.listen(netip.AddrPortFrom(serverAddr, benchPort))
		mustNoErr(b, err, "listen")
		stop := echoServer(l)
		defer stop()
		// Key the session before the timer starts.
		closeBoth(dialServer(b, client, benchPort))
		got := make([]byte, 1)
		times := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			c := echoOnce(b, client, got)
			times = append(times, time.Since(start))
			b.StopTimer()
			closeBoth(c)
			b.StartTimer()
		}
		reportMedian(b, times)
	})
}

// reportMedian reports the median of times as p50-ns: see firstByte.
func reportMedian(b *testing.B, times []time.Duration) {
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Nanoseconds()), "p50-ns")
}

// handshakeLogger is a silent engine logger that signals done (without
// blocking) when the engine has consumed a handshake response.
func handshakeLogger(done chan<- struct{}) *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, _ ...any) {
			if strings.HasSuffix(format, "Received handshake response") {
				select {
				case done <- struct{}{}:
				default:
				}
			}
		},
		Errorf: func(string, ...any) {},
	}
}

// quietTUN is a tun.Device that carries no packets: Read blocks until
// Close, Write discards.
type quietTUN struct {
	events chan tun.Event
	closed chan struct{}
}

func newQuietTUN() *quietTUN {
	t := &quietTUN{events: make(chan tun.Event, 1), closed: make(chan struct{})}
	t.events <- tun.EventUp
	return t
}

func (t *quietTUN) File() *os.File { return nil }

func (t *quietTUN) Read([][]byte, []int, int) (int, error) {
	<-t.closed
	return 0, os.ErrClosed
}

func (t *quietTUN) Write(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }

func (t *quietTUN) MTU() (int, error) { return 1420, nil }

func (t *quietTUN) Name() (string, error) { return "quiet", nil }

func (t *quietTUN) Events() <-chan tun.Event { return t.events }

func (t *quietTUN) BatchSize() int { return 1 }

func (t *quietTUN) Close() error {
	select {
	case <-t.closed:
	default:
		close(t.closed)
		close(t.events)
	}
	return nil
}
