package netstack

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wgkit/wgkit/wg"
)

// pipeResolver returns a net.Resolver that asks srv over in-memory pipes:
// no packet leaves the process. The pipes' server goroutines end before
// the test's leak check.
func pipeResolver(t *testing.T, srv *testDNS) *net.Resolver {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			client, server := net.Pipe()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer server.Close()
				server.SetDeadline(time.Now().Add(10 * time.Second))
				// The Go resolver speaks DNS over TCP on a conn that is not
				// a net.PacketConn.
				srv.serveStream(server)
			}()
			return client, nil
		},
	}
}

// TestResolverOption checks that Options.Resolver resolves the peers'
// endpoint names: A knows B only by a name that the host's resolver does
// not know, and reaches it.
func TestResolverOption(t *testing.T) {
	const name = "peer-b.wgkit.test"
	srv := &testDNS{records: map[string][]netip.Addr{}, dropped: map[string]bool{}}
	opts := &Options{Resolver: pipeResolver(t, srv)}
	a, _ := openPairOpts(t, func(a, _ *wg.Config) {
		ep := netip.MustParseAddrPort(a.Peers[0].Endpoint)
		srv.records[name+"."] = []netip.Addr{ep.Addr()}
		a.Peers[0].Endpoint = net.JoinHostPort(name, strconv.Itoa(int(ep.Port())))
	}, opts, nil)
	if !slices.Contains(srv.log(), "tcp "+name+". TypeA") {
		t.Errorf("queries %q, want an A query for %s", srv.log(), name)
	}
	if _, err := a.Ping(testContext(t, 10*time.Second), addrB4); err != nil {
		t.Fatalf("ping B by its resolved endpoint: %v", err)
	}
}

// TestOnEventOption checks that Options.OnEvent receives the device's
// events: B's peer added at Open, then a completed handshake with A, and
// that the callback may call back into the Net.
func TestOnEventOption(t *testing.T) {
	events := make(chan wg.Event, 64)
	var (
		mu           sync.Mutex
		fromCallback []netip.Addr // guarded by mu
		b            *Net
	)
	opened := make(chan struct{})
	onEvent := func(ev wg.Event) {
		if ev.Kind == wg.EventHandshakeCompleted {
			<-opened
			addrs := b.Addrs() // calling the Net from the callback
			mu.Lock()
			fromCallback = addrs
			mu.Unlock()
		}
		select {
		case events <- ev:
		default:
		}
	}
	a, bb := openPairOpts(t, nil, nil, &Options{OnEvent: onEvent})
	b = bb
	close(opened)
	if _, err := a.Ping(testContext(t, 10*time.Second), addrB4); err != nil {
		t.Fatal(err)
	}
	aKey := a.Device().PublicKey()
	var kinds []wg.EventKind
	timeout := time.After(10 * time.Second)
	for !slices.Contains(kinds, wg.EventHandshakeCompleted) {
		select {
		case ev := <-events:
			if ev.Peer != aKey {
				t.Errorf("event %v for peer %v, want A's key %v", ev.Kind, ev.Peer, aKey)
			}
			kinds = append(kinds, ev.Kind)
		case <-timeout:
			t.Fatalf("events %v after 10 s, want a completed handshake", kinds)
		}
	}
	if kinds[0] != wg.EventPeerAdded {
		t.Errorf("events %v, want the peer added first", kinds)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(fromCallback) == 0 {
		t.Error("the callback could not read the Net's addresses")
	}
}
