package wg

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// PeerFor returns the public key of the peer whose AllowedIPs route ip,
// choosing the longest matching prefix as the engine does, and false if no
// peer's AllowedIPs contain ip (or after Close). As with
// netip.Prefix.Contains, an IPv4 address matches only IPv4 prefixes, an
// IPv4-mapped IPv6 address only IPv6 ones, and an address with a zone none.
//
// It follows every change of peers, whether made through SetPeer,
// RemovePeer, Reconfigure or wg(8). Unlike Peers it formats nothing: it
// reads a table rebuilt only after the peers change, so it is cheap enough
// to call for every connection a backend opens. It is safe for concurrent
// use.
func (d *Device) PeerFor(ip netip.Addr) (Key, bool) {
	t := d.routes.Load()
	if t == nil || !t.closed && t.gen != d.routeGen.Load() {
		t = d.rebuildRoutes()
	}
	return t.lookup(ip)
}

// routeState is the part of a Device that PeerFor reads. Its table is
// rebuilt from the engine's state after any configuration change, which
// bumps gen: Device methods do so after their IpcSet, and UAPI connections
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
	if t := d.routes.Load(); t != nil && (t.closed || t.gen == gen) {
		return t
	}
	st, err := d.state()
	if err != nil {
		d.log.Error("wg: peer routes", "err", err)
		return &routeTable{} // not stored: the next call tries again
	}
	t := newRouteTable(gen, st.peers)
	d.routes.Store(t)
	d.routeRebuilds.Add(1)
	return t
}

// closeRoutes makes PeerFor report no peer from now on.
func (d *Device) closeRoutes() {
	d.routeMu.Lock()
	defer d.routeMu.Unlock()
	d.routes.Store(&routeTable{closed: true})
}

// routeTable maps prefixes to peers, grouped by prefix length so that a
// lookup costs one map access per distinct length, longest first.
type routeTable struct {
	gen    uint64
	closed bool
	v4, v6 []routeLevel
}

type routeLevel struct {
	bits  int
	peers map[netip.Prefix]Key
}

func newRouteTable(gen uint64, peers []PeerStatus) *routeTable {
	t := &routeTable{gen: gen}
	for _, p := range peers {
		for _, pfx := range p.AllowedIPs {
			if !pfx.IsValid() {
				continue
			}
			pfx = pfx.Masked()
			levels := &t.v4
			if pfx.Addr().Is6() {
				levels = &t.v6
			}
			i := slices.IndexFunc(*levels, func(l routeLevel) bool { return l.bits == pfx.Bits() })
			if i < 0 {
				*levels = append(*levels, routeLevel{bits: pfx.Bits(), peers: make(map[netip.Prefix]Key)})
				i = len(*levels) - 1
			}
			(*levels)[i].peers[pfx] = p.PublicKey
		}
	}
	for _, levels := range [][]routeLevel{t.v4, t.v6} {
		slices.SortFunc(levels, func(a, b routeLevel) int { return b.bits - a.bits })
	}
	return t
}

func (t *routeTable) lookup(ip netip.Addr) (Key, bool) {
	if t.closed || !ip.IsValid() || ip.Zone() != "" {
		return Key{}, false
	}
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
