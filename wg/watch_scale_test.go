package wg

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
)

// TestChangesDoNotPoll checks that SetPeer and Reconfigure do not make
// the watcher read the engine's state, which costs in proportion to all
// the peers, while they still report the peers they add.
func TestChangesDoNotPoll(t *testing.T) {
	checkLeaks(t)
	rec := newRecorder()
	d, cfg := scaleTestDevice(t, 3, rec.onEvent) // the watcher polls at start only
	deadline := time.Now().Add(5 * time.Second)
	for d.watch.polls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	polls := d.watch.polls.Load()
	added := mustKey(t).PublicKey()
	if err := d.SetPeer(Peer{PublicKey: added, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/32")}}); err != nil {
		t.Fatal(err)
	}
	cfg.Peers[1].AllowedIPs = append(cfg.Peers[1].AllowedIPs, netip.MustParsePrefix("10.99.1.0/24"))
	if err := d.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 0, 5*time.Second, "EventPeerAdded", is(EventPeerAdded, added))
	time.Sleep(50 * time.Millisecond) // room for a poll that should not come
	if got := d.watch.polls.Load() - polls; got != 0 {
		t.Errorf("SetPeer and Reconfigure made the watcher poll %d times, want 0", got)
	}
}

// TestPollFollowsReplacedPeer checks that after wg(8) replaced a peer
// (removed and added it again in one "set", so the engine has a new
// peer for the same key), the next poll follows the engine's new peer:
// the watcher looks pointers up again only after such a change.
func TestPollFollowsReplacedPeer(t *testing.T) {
	checkLeaks(t)
	d, sock, _ := uapiTestDevice(t, 2, nil)
	k := d.Config().Peers[0].PublicKey
	before := d.wgo.dev.LookupPeer(device.NoisePublicKey(k))
	d.watch.poll()
	uapiSetText(t, sock, fmt.Sprintf("public_key=%s\nremove=true\npublic_key=%s\nallowed_ip=10.100.0.0/24\n", hexKey(k), hexKey(k)))
	after := d.wgo.dev.LookupPeer(device.NoisePublicKey(k))
	if after == nil || after == before {
		t.Fatalf("wg set did not replace the engine's peer (%p, then %p)", before, after)
	}
	d.watch.poll()
	d.watch.mu.RLock()
	defer d.watch.mu.RUnlock()
	if p := d.watch.peers[k]; p == nil || p.ptr != after {
		t.Errorf("the watcher follows %p, want the engine's new peer %p", p.ptr, after)
	}
	if got, ok := d.watch.byPtr[after]; !ok || got != k {
		t.Errorf("byPtr[new peer] = %v, %v; want %v", got, ok, k)
	}
	if _, ok := d.watch.byPtr[before]; ok {
		t.Error("byPtr still holds the engine's removed peer")
	}
}
