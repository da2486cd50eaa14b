package wg

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// PeerFor returns the public key of the peer whose AllowedIPs route ip,
// choosing the longest matching prefix as the engine does, and false if no
// peer's AllowedIPs contain ip (or after Close). As with
// netip.Prefix.Contains, an IPv4 address matches only IPv4 prefixes, an
// IPv4-mapped IPv6 address only IPv6 ones, and an address with a zone none.
//
// It follows every change of peers, whether made through SetPeer,
// RemovePeer, Reconfigure or wg(8). On a kernel engine (see
// [NewDeviceEngine]) wg(8)'s changes reach the engine through netlink or
// the driver, unseen by the device: PeerFor follows them within a second
// (its table is read again when older). Unlike Peers it formats nothing: it
// reads a table rebuilt only after the peers change, so it is cheap enough
// to call for every connection a backend opens. It is safe for concurrent
// use.
func (d *Device) PeerFor(ip netip.Addr) (Key, bool) {
	t := d.routes.Load()
	if d.staleRoutes(t, d.routeGen.Load()) {
		t = d.rebuildRoutes()
	}
	return t.lookup(ip)
}

// staleRoutes reports whether t needs rebuilding at configuration
// generation gen: none built yet, the configuration changed since, or
// older than routeTTL.
func (d *Device) staleRoutes(t *routeTable, gen uint64) bool {
	switch {
	case t == nil:
		return true
	case t.closed:
		return false
	}
	return t.gen != gen || d.routeTTL > 0 && time.Since(t.built) >= d.routeTTL
}

// routeState is the part of a Device that PeerFor reads. SetPeer and
// RemovePeer update its table in place (routesSet, routesRemoved); it is
// rebuilt from the engine's state after any other configuration change,
// which bumps gen: Reconfigure and failed changes do so after their IpcSet, and UAPI connections
// after a "set" and before its reply (see serveUAPIConn), so the change is
// visible to PeerFor by the time the caller or wg(8) learns it is done. A
// "get" (wg show) changes nothing and leaves the table as it is.
type routeState struct {
	routeGen      atomic.Uint64              // bumped after every configuration change
	routes        atomic.Pointer[routeTable] // the last table built; nil before the first
	routeMu       sync.Mutex                 // serializes rebuilds and the closing of the table
	routeRebuilds atomic.Uint64              // tables built from the engine's state, for tests
}

// routesChanged marks the route table stale; call it after the engine's
// configuration changed (or may have, as after a failed IpcSet).
func (r *routeState) routesChanged() { r.routeGen.Add(1) }

// rebuildRoutes builds a table of the engine's current AllowedIPs, unless
// another caller just did.
func (d *Device) rebuildRoutes() *routeTable {
	d.routeMu.Lock()
	defer d.routeMu.Unlock()
	// Read gen before the engine's state: a change after this point bumps
	// gen again and makes the table stale, never wrongly fresh.
	gen := d.routeGen.Load()
	if t := d.routes.Load(); !d.staleRoutes(t, gen) {
		return t
	}
	st, err := d.state()
	if err != nil {
		d.log.Error("wg: peer routes", "err", err)
		return &routeTable{} // not stored: the next call tries again
	}
	t := newRouteTable(gen, st.peers)
	t.built = time.Now()
	d.routes.Store(t)
	d.routeRebuilds.Add(1)
	return t
}

// routesSet records that peer now has exactly prefixes, after a SetPeer
// whose change the engine took. A current table is updated in place; a
// stale one (or none) is left for PeerFor to rebuild.
func (d *Device) routesSet(peer Key, prefixes []netip.Prefix) {
	d.routesUpdate(func(t *routeTable) { t.set(peer, prefixes) })
}

// routesRemoved records that peer is gone, after a RemovePeer.
func (d *Device) routesRemoved(peer Key) {
	d.routesUpdate(func(t *routeTable) { t.remove(peer) })
}

// routesUpdate applies f to the table if it is current. It holds routeMu,
// so a rebuild that read the engine's state before the change cannot
// store its table after f ran; one that read it after includes the
// change already, and f applied again changes nothing.
func (d *Device) routesUpdate(f func(*routeTable)) {
	d.routeMu.Lock()
	defer d.routeMu.Unlock()
	t := d.routes.Load()
	if t == nil || t.closed || t.gen != d.routeGen.Load() {
		return // the next PeerFor rebuilds from the engine
	}
	t.mu.Lock()
	f(t)
	t.mu.Unlock()
}

// closeRoutes makes PeerFor report no peer from now on.
func (d *Device) closeRoutes() {
	d.routeMu.Lock()
	defer d.routeMu.Unlock()
	d.routes.Store(&routeTable{closed: true})
}

// routeTable maps prefixes to peers, grouped by prefix length so that a
// lookup costs one map access per distinct length, longest first. SetPeer
// and RemovePeer update a current table in place (see routesSet), so that
// changing one peer of many costs that peer's prefixes, not a rebuild.
type routeTable struct {
	gen    uint64
	built  time.Time // when read from the engine, for routeTTL
	closed bool

	mu     sync.RWMutex           // guards v4, v6 and byPeer
	v4, v6 []routeLevel           // longest prefixes first; no empty level
	byPeer map[Key][]netip.Prefix // each peer's prefixes, masked
}

type routeLevel struct {
	bits  int
	peers map[netip.Prefix]Key
}

func newRouteTable(gen uint64, peers []PeerStatus) *routeTable {
	t := &routeTable{gen: gen, byPeer: make(map[Key][]netip.Prefix, len(peers))}
	for _, p := range peers {
		t.set(p.PublicKey, p.AllowedIPs)
	}
	return t
}

// levels returns the levels of pfx's family.
func (t *routeTable) levels(pfx netip.Prefix) *[]routeLevel {
	if pfx.Addr().Is6() {
		return &t.v6
	}
	return &t.v4
}

// set makes prefixes (masked, invalid ones skipped) peer's, as the engine
// does with replace_allowed_ips: the peer loses the prefixes it had, and a
// prefix another peer had moves to this one. Call with t.mu held for
// writing, or before t is shared.
func (t *routeTable) set(peer Key, prefixes []netip.Prefix) {
	t.remove(peer)
	own := make([]netip.Prefix, 0, len(prefixes))
	for _, pfx := range prefixes {
		if !pfx.IsValid() {
			continue
		}
		pfx = pfx.Masked()
		levels := t.levels(pfx)
		i := slices.IndexFunc(*levels, func(l routeLevel) bool { return l.bits == pfx.Bits() })
		if i < 0 {
			i, _ = slices.BinarySearchFunc(*levels, pfx.Bits(), func(l routeLevel, bits int) int { return bits - l.bits })
			*levels = slices.Insert(*levels, i, routeLevel{bits: pfx.Bits(), peers: make(map[netip.Prefix]Key)})
		}
		if prev, ok := (*levels)[i].peers[pfx]; ok && prev != peer {
			t.byPeer[prev] = slices.DeleteFunc(t.byPeer[prev], func(q netip.Prefix) bool { return q == pfx })
		}
		(*levels)[i].peers[pfx] = peer
		if !slices.Contains(own, pfx) {
			own = append(own, pfx)
		}
	}
	if len(own) > 0 {
		t.byPeer[peer] = own
	}
}

// remove drops peer and its prefixes. Call with t.mu held for writing.
func (t *routeTable) remove(peer Key) {
	for _, pfx := range t.byPeer[peer] {
		levels := t.levels(pfx)
		i := slices.IndexFunc(*levels, func(l routeLevel) bool { return l.bits == pfx.Bits() })
		if i < 0 || (*levels)[i].peers[pfx] != peer {
			continue
		}
		delete((*levels)[i].peers, pfx)
		if len((*levels)[i].peers) == 0 {
			*levels = slices.Delete(*levels, i, i+1)
		}
	}
	delete(t.byPeer, peer)
}

func (t *routeTable) lookup(ip netip.Addr) (Key, bool) {
	if t.closed || !ip.IsValid() || ip.Zone() != "" {
		return Key{}, false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	levels := t.v4
	if ip.Is6() {
		levels = t.v6
	}
	for _, l := range levels {
		pfx, err := ip.Prefix(l.bits)
		if err != nil {
			continue
		}
		if k, ok := l.peers[pfx]; ok {
			return k, true
		}
	}
	return Key{}, false
}
