package wg

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// logBuffer collects a device's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// uapiTestDevice starts a device with peers peers (peer i routes
// 10.(100+i/256).(i%256).0/24) serving wg(8) in a temp dir, and returns it
// with its socket's path and its log at warning level and above. lim, if
// not nil, replaces the default limits. The device is closed at cleanup.
func uapiTestDevice(t *testing.T, peers int, lim *uapiLimits) (*Device, string, *logBuffer) {
	t.Helper()
	dir := t.TempDir()
	l, err := ListenUAPI(dir, "wgserve")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Interface: Interface{PrivateKey: mustKey(t)}}
	for i := range peers {
		cfg.Peers = append(cfg.Peers, Peer{
			PublicKey:  mustKey(t).PublicKey(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + i/256), byte(i), 0}), 24)},
		})
	}
	logs := new(logBuffer)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var d *Device
	if lim == nil {
		d, err = NewDevice(tuntest.NewChannelTUN().TUN(), cfg, &DeviceOptions{UAPI: l, Logger: log})
	} else {
		d, err = NewDevice(tuntest.NewChannelTUN().TUN(), cfg, &DeviceOptions{Logger: log})
		if err == nil {
			d.uapiLimits = *lim
			d.startUAPI(l)
		} else {
			l.Close()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, filepath.Join(dir, "wgserve.sock"), logs
}

func dialUAPI(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UnixConn)
}

// checkDeviceResponsive fails t unless each of the device's getters and
// changes returns within a generous bound (they take microseconds when
// nothing blocks them).
func checkDeviceResponsive(t *testing.T, d *Device) {
	t.Helper()
	const bound = 3 * time.Second
	calls := []struct {
		name string
		call func() error
	}{
		{"Peers", func() error {
			if len(d.Peers()) == 0 {
				return errors.New("no peers")
			}
			return nil
		}},
		{"ListenPort", func() error {
			if d.ListenPort() == 0 {
				return errors.New("port 0")
			}
			return nil
		}},
		{"Config", func() error {
			if len(d.Config().Peers) == 0 {
				return errors.New("no peers")
			}
			return nil
		}},
		{"SetPeer", func() error {
			return d.SetPeer(Peer{PublicKey: mustKey(t).PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.250.0.0/16")}})
		}},
		{"PeerFor", func() error {
			// The SetPeer above changed the peers: PeerFor rebuilds.
			if _, ok := d.PeerFor(netip.MustParseAddr("10.250.1.1")); !ok {
				return errors.New("no peer for 10.250.1.1")
			}
			return nil
		}},
	}
	for _, c := range calls {
		done := make(chan error, 1)
		go func() { done <- c.call() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		case <-time.After(bound):
			t.Errorf("%s blocked for %v by a wg(8) client", c.name, bound)
			return // the later calls would block behind it
		}
	}
}

// checkClosedByServer fails t unless the server closes c within bound.
func checkClosedByServer(t *testing.T, c net.Conn, bound time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(bound))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, net.ErrClosed) {
		return // closed by our side after the server reset it
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the server did not close the connection within %v", bound)
	}
}

// TestUAPIStalledClients checks that no wg(8) client, however it
// misbehaves, keeps the device's getters, SetPeer or PeerFor waiting, and
// that clients breaking a limit are disconnected at once.
func TestUAPIStalledClients(t *testing.T) {
	checkLeaks(t)
	key := mustKey(t)
	sameKey := "private_key=" + hexKey(key) + "\n"
	tests := []struct {
		name string
		// peers is the device's number of peers: enough for a get reply
		// larger than the socket buffers, where it matters.
		peers int
		// client misbehaves on c; it may block until c is closed.
		client func(c *net.UnixConn) error
		// closed says the server must close the connection at once;
		// heap bounds the heap's growth by then.
		closed bool
		heap   int64
	}{
		{"set without its end", 1, func(c *net.UnixConn) error {
			_, err := io.WriteString(c, "set=1\nlisten_port=0\n")
			return err
		}, false, 0},
		{"get never read", 300, func(c *net.UnixConn) error {
			// 300 peers make a reply of about 70 KiB; 100 of them
			// overflow any socket buffer.
			_, err := io.WriteString(c, strings.Repeat("get=1\n\n", 100))
			return err
		}, false, 0},
		{"no newline", 1, func(c *net.UnixConn) error {
			chunk := bytes.Repeat([]byte{'a'}, 1<<20)
			for range 64 {
				if _, err := c.Write(chunk); err != nil {
					return err
				}
			}
			return nil
		}, true, 8 << 20},
		{"request over the cap", 1, func(c *net.UnixConn) error {
			// Lines the engine accepts (another private key), without
			// the blank line that ends a set: the engine would read
			// on. None of them may be applied.
			chunk := []byte(strings.Repeat(sameKey, (1<<20)/len(sameKey)))
			if _, err := io.WriteString(c, "set=1\n"); err != nil {
				return err
			}
			for range uapiMaxRequest>>20 + 1 {
				if _, err := c.Write(chunk); err != nil {
					return err
				}
			}
			return nil
		}, true, 2*uapiMaxRequest + 8<<20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, path, logs := uapiTestDevice(t, tt.peers, nil)
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			c := dialUAPI(t, path)
			c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			sent := make(chan error, 1)
			go func() { sent <- tt.client(c) }()
			time.Sleep(300 * time.Millisecond) // let the server take the bytes
			checkDeviceResponsive(t, d)
			if tt.closed {
				checkClosedByServer(t, c, 5*time.Second)
				if got := strings.Count(logs.String(), "wg: uapi: closing connection"); got != 1 {
					t.Errorf("%d log lines for the closed connection, want 1:\n%s", got, logs)
				}
				var after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&after)
				if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > tt.heap {
					t.Errorf("heap grew by %d MiB, want at most %d MiB", grown>>20, tt.heap>>20)
				}
			}
			c.Close()
			<-sent
			// The device still serves wg(8).
			checkGet(t, dialUAPI(t, path), d.PublicKey())
		})
	}
}

// checkGet does a UAPI get on c and checks that it reports the device's
// key and errno=0.
func checkGet(t *testing.T, c net.Conn, pub Key) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "get=1\n\n"); err != nil {
		t.Fatal(err)
	}
	st, errno, err := readUAPIReply(bufio.NewReader(c))
	if err != nil || errno != "0" {
		t.Fatalf("get: errno %q, %v", errno, err)
	}
	es, err := parseUAPIGet(st)
	if err != nil {
		t.Fatal(err)
	}
	if got := es.privateKey.PublicKey(); got != pub {
		t.Errorf("get reports public key %v, want %v", got, pub)
	}
}

// readUAPIReply reads one reply: its lines before errno, and the errno.
func readUAPIReply(r *bufio.Reader) (body, errno string, err error) {
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", "", err
		}
		if v, ok := strings.CutPrefix(line, "errno="); ok {
			errno = strings.TrimSuffix(v, "\n")
			if blank, err := r.ReadString('\n'); err != nil || blank != "\n" {
				return "", "", fmt.Errorf("no blank line after errno: %q, %v", blank, err)
			}
			return b.String(), errno, nil
		}
		b.WriteString(line)
	}
}

// TestUAPIDeadlines checks that a client that stalls mid-request, or
// stops reading a reply, is disconnected after the timeout.
func TestUAPIDeadlines(t *testing.T) {
	checkLeaks(t)
	lim := defaultUAPILimits()
	lim.readTimeout = 200 * time.Millisecond
	lim.writeTimeout = 200 * time.Millisecond
	tests := []struct {
		name  string
		peers int
		send  string
	}{
		{"stalled set", 1, "set=1\nlisten_port=0\n"},
		{"idle", 1, ""},
		{"unread replies", 300, strings.Repeat("get=1\n\n", 100)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, path, logs := uapiTestDevice(t, tt.peers, &lim)
			c := dialUAPI(t, path)
			if _, err := io.WriteString(c, tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.name == "unread replies" {
				time.Sleep(time.Second) // the server's write times out unread
			}
			checkClosedByServer(t, c, 5*time.Second)
			if got := strings.Count(logs.String(), "wg: uapi: closing connection"); got != 1 {
				t.Errorf("%d log lines for the closed connection, want 1:\n%s", got, logs)
			}
		})
	}
}

// TestUAPIPipelined checks that several requests sent at once are all
// answered, in order: each one is handed to the engine alone.
func TestUAPIPipelined(t *testing.T) {
	checkLeaks(t)
	d, path, _ := uapiTestDevice(t, 1, nil)
	c := dialUAPI(t, path)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	added := mustKey(t).PublicKey()
	reqs := "get=1\n\n" +
		"set=1\npublic_key=" + hexKey(added) + "\nallowed_ip=10.66.0.0/16\n\n" +
		"get=1\n\n" +
		"set=1\nbogus=1\n\n" +
		"get=1\n\n"
	if _, err := io.WriteString(c, reqs); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	var got []string
	for range 5 {
		body, errno, err := readUAPIReply(r)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("errno=%s peers=%d", errno, strings.Count(body, "public_key=")))
	}
	want := []string{"errno=0 peers=1", "errno=0 peers=0", "errno=0 peers=2", "errno=-22 peers=0", "errno=0 peers=2"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	if len(d.Peers()) != 2 {
		t.Errorf("Peers after wg set: %d, want 2", len(d.Peers()))
	}
}

// TestUAPIGetKeepsRoutes checks that a read-only request (wg show) leaves
// PeerFor's table as it is, and that a set still reaches PeerFor before
// wg(8) gets its reply.
func TestUAPIGetKeepsRoutes(t *testing.T) {
	checkLeaks(t)
	d, path, _ := uapiTestDevice(t, 3, nil)
	in := netip.MustParseAddr("10.100.1.9")
	if _, ok := d.PeerFor(in); !ok {
		t.Fatalf("PeerFor(%v): no peer", in)
	}
	built := d.routeRebuilds.Load()
	c := dialUAPI(t, path)
	for range 5 {
		checkGet(t, c, d.PublicKey())
		if _, ok := d.PeerFor(in); !ok {
			t.Fatalf("PeerFor(%v): no peer", in)
		}
	}
	if got := d.routeRebuilds.Load(); got != built {
		t.Errorf("5 UAPI gets rebuilt PeerFor's table %d times, want 0", got-built)
	}
	added := mustKey(t).PublicKey()
	fmt.Fprintf(c, "set=1\npublic_key=%s\nallowed_ip=10.77.0.0/16\n\n", hexKey(added))
	if _, errno, err := readUAPIReply(bufio.NewReader(c)); err != nil || errno != "0" {
		t.Fatalf("set: errno %q, %v", errno, err)
	}
	if k, ok := d.PeerFor(netip.MustParseAddr("10.77.3.4")); !ok || k != added {
		t.Errorf("PeerFor(10.77.3.4) after wg set = %v, %v; want %v", k, ok, added)
	}
	if got := d.routeRebuilds.Load(); got != built+1 {
		t.Errorf("a UAPI set rebuilt PeerFor's table %d times, want 1", got-built)
	}
}

func TestReadUAPIRequest(t *testing.T) {
	// A wg setconf of 10 000 peers as wg(8) writes it, with every field
	// at its longest and four IPv6 allowed IPs each, must fit.
	var big strings.Builder
	big.WriteString("set=1\nprivate_key=" + strings.Repeat("a", 64) + "\nlisten_port=65535\nfwmark=4294967295\nreplace_peers=true\n")
	for i := range 10000 {
		fmt.Fprintf(&big, "public_key=%064x\npreshared_key=%064x\nendpoint=[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%%eth0]:65535\npersistent_keepalive_interval=65535\nreplace_allowed_ips=true\n", i, i)
		for j := range 4 {
			fmt.Fprintf(&big, "allowed_ip=fd00:ffff:ffff:ffff:ffff:ffff:%04x:%04x/128\n", i, j)
		}
	}
	big.WriteString("\n")
	// A set of exactly uapiMaxRequest bytes: fwmark lines, one padding
	// line and the blank line.
	rest := uapiMaxRequest - len("set=1\n") - len("\n")
	atCap := "set=1\n" + strings.Repeat("fwmark=1\n", rest/9-1) + strings.Repeat("a", rest%9+8) + "\n\n"
	if len(atCap) != uapiMaxRequest {
		t.Fatalf("test bug: request of %d bytes, want %d", len(atCap), uapiMaxRequest)
	}
	tests := []struct {
		name    string
		in      string
		wantOp  uapiOp
		wantErr string // substring; "" for success
	}{
		{"get", "get=1\n\n", uapiGet, ""},
		{"set", "set=1\nfwmark=1\n\n", uapiSet, ""},
		{"setconf of 10000 peers", big.String(), uapiSet, ""},
		{"at the cap", atCap, uapiSet, ""},
		{"a byte over the cap", "set=1\na" + atCap[len("set=1\n"):], 0, "request longer than 16777216 bytes"},
		{"closed between requests", "", 0, "EOF"},
		{"closed inside", "set=1\nfwmark=1\n", 0, "connection closed inside a request"},
		{"unknown op", "hello=1\n\n", 0, `not a UAPI get or set: "hello=1\n"`},
		{"long op quoted short", strings.Repeat("x", 1000) + "\n\n", 0, `"` + strings.Repeat("x", 40) + `"...`},
		{"line too long", "set=1\n" + strings.Repeat("x", uapiMaxLine) + "\n\n", 0, "line longer than 4096 bytes"},
		{"no newline", strings.Repeat("x", 1<<20), 0, "line longer than 4096 bytes"},
		{"request too long", "set=1\n" + strings.Repeat("fwmark=1\n", uapiMaxRequest/9) + "\n", 0, "request longer than 16777216 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var req []byte
			br := bufio.NewReaderSize(strings.NewReader(tt.in), uapiMaxLine)
			op, err := readUAPIRequest(br, &req, uapiMaxLine, uapiMaxRequest)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				if len(err.Error()) > 200 {
					t.Errorf("error of %d bytes: quotes too much", len(err.Error()))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if op != tt.wantOp || string(req) != tt.in {
				t.Errorf("op %v, request of %d bytes; want %v and the %d bytes sent", op, len(req), tt.wantOp, len(tt.in))
			}
			if cap(req) > uapiMaxRequest {
				t.Errorf("request buffer of %d bytes, over the %d-byte cap", cap(req), uapiMaxRequest)
			}
		})
	}
	if n := big.Len(); n > uapiMaxRequest*3/4 {
		t.Errorf("a 10000-peer setconf takes %d bytes, too close to the %d-byte cap", n, uapiMaxRequest)
	}
}
