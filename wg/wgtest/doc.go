// Package wgtest runs real WireGuard peers inside a test process, as
// net/http/httptest runs HTTP servers: no root, no TUN device, and no
// address, route or interface on the host. Every peer is a wireguard-go
// engine on the netstack backend; tunnel addresses exist only in the
// process.
//
// # Server
//
// [NewServer] starts one peer whose UDP socket listens on 127.0.0.1 at a
// free port. [Server.ClientConfig] hands out a ready [wg.Config] for the
// code under test (a new key, the next tunnel address, the server as its
// peer) and adds that client to the running server; [Server.Net] is the
// server's side of the tunnel:
//
//	func TestFetch(t *testing.T) {
//		srv := wgtest.NewServer(t, nil)
//		ln, err := srv.Net().Listen("tcp", ":80")
//		if err != nil {
//			t.Fatal(err)
//		}
//		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
//			io.WriteString(w, "hello")
//		}))
//
//		// The code under test opens its own tunnel from the config.
//		got, err := myapp.Fetch(ctx, srv.ClientConfig(), "http://"+srv.Addr().String()+"/")
//		...
//	}
//
// The server (and every client opened with [Server.Client]) is closed
// through t.Cleanup, which also closes the listener and ends http.Serve.
//
// # Network
//
// [NewNetwork] starts n peers, a full mesh or hub and spoke
// ([NetworkOptions.Topology]; with [NetworkOptions.Relay] the hub relays
// between spokes), connected by an in-memory transport instead
// of UDP sockets, so hundreds of peers fit in one test and no port is
// taken. [Network.Peer] gives each peer's [Peer.Net], addresses and keys;
// [Peer.Stop] and [Peer.Restart] stop a peer and start it again with the
// same keys.
//
// The transport misbehaves on request, also while traffic flows:
// [Network.SetFaults] sets loss, delay, jitter, reordering, duplication
// and a path MTU ([Faults]) for all links, [Network.SetLinkFaults] for
// one direction between two peers; [Network.Partition] and [Network.Heal] cut
// and restore the path between two peers; [Network.Roam] moves a peer to a
// new transport address, and the others follow it by WireGuard's roaming.
// With the same [NetworkOptions.Seed] the fault decisions on each link
// are the same. [Network.Stats] counts what the transport did.
//
//	nw := wgtest.NewNetwork(t, 2, &wgtest.NetworkOptions{Seed: 1})
//	nw.SetFaults(wgtest.Faults{Loss: 0.05, Reorder: 0.05})
//	conn, err := nw.Peer(0).Net().DialContext(ctx, "tcp", nw.Peer(1).Addr().String()+":80")
//
// # Leak checks
//
// After closing a Server or Network, its cleanup fails the test if
// goroutines started since NewServer or NewNetwork are still running
// (go.uber.org/goleak, retried for three seconds). The check is a
// snapshot diff and cannot tell whose goroutines it sees, so tests that
// call t.Parallel should set NoLeakCheck in the options and use
// goleak.VerifyTestMain for the package instead.
//
// Out of scope: kernel TUN devices (see the tun backend's tests, which use
// network namespaces) and real network conditions beyond the fault model.
package wgtest
