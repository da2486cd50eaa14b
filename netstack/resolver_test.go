package netstack

import (
	"context"
	"encoding/binary"
	"io"
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
				// a net.PacketConn: length-prefixed messages.
				for {
					var lb [2]byte
					if _, err := io.ReadFull(server, lb[:]); err != nil {
						return
					}
					req := make([]byte, binary.BigEndian.Uint16(lb[:]))
					if _, err := io.ReadFull(server, req); err != nil {
						return
					}
					resp := srv.answer(req, "tcp")
					if _, err := server.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...)); err != nil {
						return
					}
				}
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
