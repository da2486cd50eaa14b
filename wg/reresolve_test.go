package wg

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/dns/dnsmessage"
)

// fakeDNS answers A queries for one name from a table the test changes,
// over in-process pipes (a net.Resolver's Dial): no socket at all.
type fakeDNS struct {
	mu      sync.Mutex
	addrs   map[string][]netip.Addr // guarded by mu; by lower-case FQDN
	queries int                     // guarded by mu
	wg      sync.WaitGroup
}

func (f *fakeDNS) set(name string, addrs ...netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[name] = addrs
}

func (f *fakeDNS) resolver(t *testing.T) *net.Resolver {
	t.Cleanup(f.wg.Wait)
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		c, s := net.Pipe() // not a PacketConn: the resolver speaks DNS over TCP framing
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer s.Close()
			f.serve(s)
		}()
		return c, nil
	}}
}

func (f *fakeDNS) serve(c net.Conn) {
	for {
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(msg)
		if err != nil {
			return
		}
		q, err := p.Question()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.queries++
		addrs, ok := f.addrs[q.Name.String()]
		f.mu.Unlock()
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
		if !ok {
			b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RCode: dnsmessage.RCodeNameError})
		}
		b.EnableCompression()
		b.StartQuestions()
		b.Question(q)
		b.StartAnswers()
		for _, a := range addrs {
			rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
			switch {
			case q.Type == dnsmessage.TypeA && a.Is4():
				b.AResource(rh, dnsmessage.AResource{A: a.As4()})
			case q.Type == dnsmessage.TypeAAAA && a.Is6():
				b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()})
			}
		}
		out, err := b.Finish()
		if err != nil {
			return
		}
		binary.BigEndian.PutUint16(n[:], uint16(len(out)))
		if _, err := c.Write(append(n[:], out...)); err != nil {
			return
		}
	}
}

// TestReresolveFollowsMovedName: a's peer b is configured by name; b moves
// to a new address and the name follows it, while b stays silent. a's
// traffic to b resumes through re-resolution alone: the test only pings.
// With a dead address listed first, a tries it, then the next.
func TestReresolveFollowsMovedName(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deadHead bool // the name's first address is one where nobody runs
	}{
		{"one address", false},
		{"dead address first", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // leak-checked by TestMain
			sw := newSwitch(t)
			a := newMemPeer(t, sw, 0, "10.7.0.1")
			b := newMemPeer(t, sw, 1, "10.7.0.2")
			dns := &fakeDNS{addrs: map[string][]netip.Addr{}}
			const name = "peer-b.wgkit.test."
			dns.set(name, b.bind.Addr().Addr())
			eb := b.peerEntry(Key{})
			eb.Endpoint = net.JoinHostPort(name, "51820")
			if b.bind.Addr().Port() != 51820 {
				t.Fatalf("memnet address %v: the test assumes port 51820", b.bind.Addr())
			}
			ea := a.peerEntry(Key{})
			ea.Endpoint = "" // b learns a's address from a's packets only
			b.startWith(t, ea, nil)
			timing := fastTiming
			timing.tryWait = 1500 * time.Millisecond
			a.startWith(t, eb, &DeviceOptions{Resolver: dns.resolver(t), timing: &timing})
			bk := b.key.PublicKey()
			if !a.pingUntil(t, b, 5*time.Second) {
				t.Fatalf("no ping a -> b before the move")
			}

			n := len(a.rec.events())
			moved, err := sw.NewAddr()
			if err != nil {
				t.Fatal(err)
			}
			dead, err := sw.NewAddr()
			if err != nil {
				t.Fatal(err)
			}
			if moved.Port() != 51820 || dead.Port() != 51820 {
				t.Fatalf("memnet addresses %v, %v: the test assumes port 51820", moved, dead)
			}
			if err := b.bind.Move(moved); err != nil {
				t.Fatal(err)
			}
			if tc.deadHead {
				dns.set(name, dead.Addr(), moved.Addr())
			} else {
				dns.set(name, moved.Addr())
			}
			start := time.Now()
			if !a.pingUntil(t, b, 20*time.Second) {
				t.Fatalf("no ping a -> b within 20 s of the move; events %v", kinds(a.rec.events()[n:]))
			}
			t.Logf("traffic resumed %v after the move", time.Since(start))
			for _, ev := range a.rec.events()[n:] {
				t.Logf("%v %v %v", ev.Time.Sub(start), ev.Kind, ev.Endpoint)
			}
			var want []netip.AddrPort
			if tc.deadHead {
				want = append(want, dead)
			}
			want = append(want, moved)
			var got []netip.AddrPort
			for _, ev := range a.rec.events()[n:] {
				if ev.Kind == EventEndpointChanged && ev.Peer == bk {
					got = append(got, ev.Endpoint)
				}
			}
			if diff := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.AddrPort) bool { return x == y })); diff != "" {
				t.Errorf("endpoints tried (-want +got):\n%s", diff)
			}
			if got := a.dev.Config().Peers[0].Endpoint; got != eb.Endpoint {
				t.Errorf("Config endpoint = %q, want the configured name %q", got, eb.Endpoint)
			}
		})
	}
}

// TestReresolveInterval: with DeviceOptions.ReresolveInterval, an idle
// peer follows its name without any traffic once no handshake has
// completed for the re-resolve age; and an endpoint it roamed to on its
// own is kept while its handshakes are recent, whatever the name says.
func TestReresolveInterval(t *testing.T) {
	for _, tc := range []struct {
		name string
		age  time.Duration // watchTiming.reresolve
		roam bool          // b roams on its own and talks; the name keeps the old address
	}{
		{"idle peer follows its name", time.Second, false},
		{"roamed endpoint kept", time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // leak-checked by TestMain
			sw := newSwitch(t)
			a := newMemPeer(t, sw, 0, "10.7.0.1")
			b := newMemPeer(t, sw, 1, "10.7.0.2")
			dns := &fakeDNS{addrs: map[string][]netip.Addr{}}
			const name = "peer-b.wgkit.test."
			old := b.bind.Addr()
			dns.set(name, old.Addr())
			eb := b.peerEntry(Key{})
			eb.Endpoint = net.JoinHostPort(name, "51820")
			ea := a.peerEntry(Key{})
			ea.Endpoint = ""
			b.startWith(t, ea, nil)
			timing := fastTiming
			timing.reresolve = tc.age
			a.startWith(t, eb, &DeviceOptions{Resolver: dns.resolver(t), ReresolveInterval: 200 * time.Millisecond, timing: &timing})
			bk := b.key.PublicKey()
			if !a.pingUntil(t, b, 5*time.Second) {
				t.Fatal("no ping a -> b")
			}
			moved, err := sw.NewAddr()
			if err != nil {
				t.Fatal(err)
			}
			if err := b.bind.Move(moved); err != nil {
				t.Fatal(err)
			}
			n := len(a.rec.events())
			if tc.roam {
				if !b.ping(t, a, 5*time.Second) { // a follows b: roaming
					t.Fatal("no ping b -> a after roaming")
				}
				a.rec.wait(t, n, 5*time.Second, "endpoint changed by roaming", is(EventEndpointChanged, bk))
				n = len(a.rec.events())
				time.Sleep(1500 * time.Millisecond) // several intervals
				for _, ev := range a.rec.events()[n:] {
					if ev.Kind == EventEndpointChanged {
						t.Errorf("endpoint moved to %v although handshakes are recent", ev.Endpoint)
					}
				}
				if ps := a.dev.Peers(); ps[0].Endpoint != moved {
					t.Errorf("endpoint = %v, want the roamed-to %v", ps[0].Endpoint, moved)
				}
				return
			}
			dns.set(name, moved.Addr())
			// No traffic at all: the periodic check moves the peer.
			_, ev, _ := a.rec.wait(t, n, 5*time.Second, "endpoint changed by re-resolution", is(EventEndpointChanged, bk))
			if ev.Endpoint != moved || ev.Previous != old {
				t.Errorf("endpoint changed %v -> %v, want %v -> %v", ev.Previous, ev.Endpoint, old, moved)
			}
			if !a.ping(t, b, 5*time.Second) {
				t.Error("no ping a -> b at the re-resolved endpoint")
			}
		})
	}
}
