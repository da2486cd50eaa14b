package wgnt

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf16"

	"github.com/wgkit/wgkit/internal/engine"
)

// This file holds everything of the driver's configuration format that
// needs no Windows API, so that it is built and tested on every system:
// mirror structs of WIREGUARD_INTERFACE, WIREGUARD_PEER and
// WIREGUARD_ALLOWED_IP (wireguard.h of WireGuardNT, the driver package's
// Interface, Peer and AllowedIP), their conversion from engine.Config and
// to engine.State, and their little-endian byte layout, which
// wgnt_windows.go checks against the driver package's structs at compile
// time.

// The byte layout (sizes and offsets) of the driver's structs.
const (
	ifaceSize       = 80 // WIREGUARD_INTERFACE, 8-byte aligned
	ifaceFlags      = 0  // uint32
	ifaceListenPort = 4  // uint16
	ifacePrivateKey = 6  // [32]byte
	ifacePublicKey  = 38 // [32]byte
	ifacePeerCount  = 72 // uint32

	peerSize          = 136 // WIREGUARD_PEER, 8-byte aligned
	peerFlags         = 0   // uint32
	peerPublicKey     = 8   // [32]byte
	peerPresharedKey  = 40  // [32]byte
	peerKeepalive     = 72  // uint16, seconds
	peerEndpoint      = 76  // SOCKADDR_INET, 28 bytes
	peerTxBytes       = 104 // uint64
	peerRxBytes       = 112 // uint64
	peerLastHandshake = 120 // uint64, FILETIME (100 ns since 1601)
	peerAllowedIPs    = 128 // uint32, the count of WIREGUARD_ALLOWED_IPs that follow

	aipSize    = 24 // WIREGUARD_ALLOWED_IP, 8-byte aligned
	aipAddress = 0  // [16]byte (IN_ADDR or IN6_ADDR)
	aipFamily  = 16 // uint16 ADDRESS_FAMILY
	aipCidr    = 18 // uint8
	aipFlags   = 20 // uint32

	sockaddrSize = 28 // SOCKADDR_INET: the larger of SOCKADDR_IN and SOCKADDR_IN6
)

// Windows' address families (ws2def.h): AF_INET6 is 23 there, not 10.
const (
	afInet  = 2
	afInet6 = 23
)

// The flags, as the driver package names them.
const (
	ifaceHasPublicKey  = 1 << 0
	ifaceHasPrivateKey = 1 << 1
	ifaceHasListenPort = 1 << 2
	ifaceReplacePeers  = 1 << 3

	peerHasPublicKey           = 1 << 0
	peerHasPresharedKey        = 1 << 1
	peerHasPersistentKeepalive = 1 << 2
	peerHasEndpoint            = 1 << 3
	peerReplaceAllowedIPs      = 1 << 5
	peerRemove                 = 1 << 6
	peerUpdateOnly             = 1 << 7
)

// fileTimeEpoch is the Unix epoch as a FILETIME.
const fileTimeEpoch = 116444736000000000

// maxConfigSize bounds the configuration one SetConfiguration call takes:
// its size is a uint32. It admits some 30 million peers or 170 million
// allowed IPs, far beyond what any adapter holds.
const maxConfigSize = math.MaxUint32

// maxNameLen is the longest adapter name in UTF-16 code units
// (MAX_ADAPTER_NAME less the terminating NUL).
const maxNameLen = 127

// rawInterface mirrors WIREGUARD_INTERFACE and what follows it.
type rawInterface struct {
	Flags      uint32
	ListenPort uint16
	PrivateKey engine.Key
	PublicKey  engine.Key
	Peers      []rawPeer
}

// rawPeer mirrors WIREGUARD_PEER and its allowed IPs.
type rawPeer struct {
	Flags         uint32
	PublicKey     engine.Key
	PresharedKey  engine.Key
	Keepalive     uint16 // seconds
	Endpoint      netip.AddrPort
	TxBytes       uint64
	RxBytes       uint64
	LastHandshake uint64 // FILETIME; 0 means none
	AllowedIPs    []rawAllowedIP
}

// rawAllowedIP mirrors WIREGUARD_ALLOWED_IP.
type rawAllowedIP struct {
	Prefix netip.Prefix
	Flags  uint32
}

// checkName checks an adapter name as WireGuardCreateAdapter wants it.
func checkName(name string) error { return checkDriverString("adapter name", name) }

// checkDriverString checks a string argument of WireGuardCreateAdapter
// (the name or the tunnel type, what says which): 1 to maxNameLen UTF-16
// code units, no NUL.
func checkDriverString(what, s string) error {
	switch n := len(utf16.Encode([]rune(s))); {
	case s == "":
		return fmt.Errorf("wgnt: empty %s", what)
	case n > maxNameLen:
		return fmt.Errorf("wgnt: %s %.20q is longer than %d UTF-16 code units", what, s, maxNameLen)
	}
	for _, r := range s {
		if r == 0 {
			return fmt.Errorf("wgnt: %s %.20q contains NUL", what, s)
		}
	}
	return nil
}

// fromConfig translates c, validated, into the driver's flags: each nil
// field of c leaves its Has flag clear, so the driver keeps the setting,
// as wgctrl does on Windows. A firewall mark other than 0 is an error:
// WireGuardNT has none.
func fromConfig(c *engine.Config) (*rawInterface, error) {
	if c.FwMark != nil && *c.FwMark != 0 {
		return nil, fmt.Errorf("firewall mark %#x: WireGuardNT has no firewall marks", *c.FwMark)
	}
	r := &rawInterface{}
	if c.PrivateKey != nil {
		r.Flags |= ifaceHasPrivateKey
		r.PrivateKey = *c.PrivateKey
	}
	if c.ListenPort != nil {
		r.Flags |= ifaceHasListenPort
		r.ListenPort = uint16(*c.ListenPort)
	}
	if c.ReplacePeers {
		r.Flags |= ifaceReplacePeers
	}
	for i := range c.Peers {
		p := &c.Peers[i]
		rp := rawPeer{Flags: peerHasPublicKey, PublicKey: p.PublicKey}
		if p.Remove {
			// The driver ignores the rest; send none of it.
			rp.Flags |= peerRemove
			r.Peers = append(r.Peers, rp)
			continue
		}
		if p.UpdateOnly {
			rp.Flags |= peerUpdateOnly
		}
		if p.PresharedKey != nil {
			rp.Flags |= peerHasPresharedKey
			rp.PresharedKey = *p.PresharedKey
		}
		if k := p.PersistentKeepalive; k != nil {
			rp.Flags |= peerHasPersistentKeepalive
			rp.Keepalive = uint16(*k / time.Second)
		}
		if p.Endpoint.IsValid() {
			rp.Flags |= peerHasEndpoint
			rp.Endpoint = netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port())
		}
		if p.ReplaceAllowedIPs {
			rp.Flags |= peerReplaceAllowedIPs
		}
		for _, pfx := range p.AllowedIPs {
			rp.AllowedIPs = append(rp.AllowedIPs, rawAllowedIP{Prefix: pfx.Masked()})
		}
		r.Peers = append(r.Peers, rp)
	}
	return r, nil
}

// state is what r, as the driver reports it, says: fields whose Has flag
// is clear are zero.
func (r *rawInterface) state() *engine.State {
	st := &engine.State{}
	if r.Flags&ifaceHasPrivateKey != 0 {
		st.PrivateKey = r.PrivateKey
	}
	if r.Flags&ifaceHasPublicKey != 0 {
		st.PublicKey = r.PublicKey
	}
	if r.Flags&ifaceHasListenPort != 0 {
		st.ListenPort = int(r.ListenPort)
	}
	for _, p := range r.Peers {
		ps := engine.PeerState{
			PublicKey: p.PublicKey,
			RxBytes:   p.RxBytes,
			TxBytes:   p.TxBytes,
		}
		if p.Flags&peerHasPresharedKey != 0 {
			ps.PresharedKey = p.PresharedKey
		}
		if p.Flags&peerHasPersistentKeepalive != 0 {
			ps.PersistentKeepalive = time.Duration(p.Keepalive) * time.Second
		}
		if p.Flags&peerHasEndpoint != 0 {
			// As the kernel engine reports it: IPv4 never as ::ffff:a.b.c.d.
			ps.Endpoint = netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port())
		}
		if p.LastHandshake != 0 {
			ps.LastHandshake = fromFileTime(p.LastHandshake)
		}
		for _, a := range p.AllowedIPs {
			ps.AllowedIPs = append(ps.AllowedIPs, a.Prefix)
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}

// fromFileTime converts a FILETIME (100 ns ticks since 1601, UTC).
func fromFileTime(ft uint64) time.Time {
	ticks := int64(min(ft, math.MaxInt64)) - fileTimeEpoch
	return time.Unix(ticks/1e7, ticks%1e7*100)
}

// size is the length of r's encoding.
func (r *rawInterface) size() uint64 {
	n := uint64(ifaceSize)
	for i := range r.Peers {
		n += peerSize + uint64(len(r.Peers[i].AllowedIPs))*aipSize
	}
	return n
}

// marshal encodes r as the driver reads it (little-endian, as every
// Windows architecture is). Counts come from the slices' lengths.
func (r *rawInterface) marshal() ([]byte, error) {
	if n := r.size(); n > maxConfigSize {
		return nil, fmt.Errorf("configuration of %d bytes exceeds the driver's limit of %d", n, uint64(maxConfigSize))
	}
	le := binary.LittleEndian
	b := make([]byte, r.size())
	le.PutUint32(b[ifaceFlags:], r.Flags)
	le.PutUint16(b[ifaceListenPort:], r.ListenPort)
	copy(b[ifacePrivateKey:], r.PrivateKey[:])
	copy(b[ifacePublicKey:], r.PublicKey[:])
	le.PutUint32(b[ifacePeerCount:], uint32(len(r.Peers)))
	off := ifaceSize
	for i := range r.Peers {
		p := &r.Peers[i]
		pb := b[off : off+peerSize]
		le.PutUint32(pb[peerFlags:], p.Flags)
		copy(pb[peerPublicKey:], p.PublicKey[:])
		copy(pb[peerPresharedKey:], p.PresharedKey[:])
		le.PutUint16(pb[peerKeepalive:], p.Keepalive)
		if err := putSockaddr(pb[peerEndpoint:peerEndpoint+sockaddrSize], p.Endpoint); err != nil {
			return nil, err
		}
		le.PutUint64(pb[peerTxBytes:], p.TxBytes)
		le.PutUint64(pb[peerRxBytes:], p.RxBytes)
		le.PutUint64(pb[peerLastHandshake:], p.LastHandshake)
		le.PutUint32(pb[peerAllowedIPs:], uint32(len(p.AllowedIPs)))
		off += peerSize
		for _, a := range p.AllowedIPs {
			ab := b[off : off+aipSize]
			addr := a.Prefix.Addr()
			switch {
			case addr.Is4():
				le.PutUint16(ab[aipFamily:], afInet)
			case addr.Is6():
				le.PutUint16(ab[aipFamily:], afInet6)
			default:
				return nil, fmt.Errorf("invalid allowed IP prefix %v", a.Prefix)
			}
			copy(ab[aipAddress:], addr.AsSlice())
			ab[aipCidr] = uint8(a.Prefix.Bits())
			le.PutUint32(ab[aipFlags:], a.Flags)
			off += aipSize
		}
	}
	return b, nil
}

// putSockaddr writes ap as a SOCKADDR_INET: the family in host order,
// the port in network order; an IPv6 zone that is a number is the scope
// ID. The invalid AddrPort leaves b zero (AF_UNSPEC).
func putSockaddr(b []byte, ap netip.AddrPort) error {
	a := ap.Addr()
	switch {
	case !a.IsValid():
		return nil
	case a.Is4():
		binary.LittleEndian.PutUint16(b[0:], afInet)
		binary.BigEndian.PutUint16(b[2:], ap.Port())
		copy(b[4:8], a.AsSlice())
	default:
		var scope uint64
		if z := a.Zone(); z != "" {
			var err error
			if scope, err = strconv.ParseUint(z, 10, 32); err != nil {
				return fmt.Errorf("endpoint %s: zone %.20q is not an interface index", ap, z)
			}
		}
		binary.LittleEndian.PutUint16(b[0:], afInet6)
		binary.BigEndian.PutUint16(b[2:], ap.Port())
		// b[4:8] is the flow info, 0.
		a16 := a.As16()
		copy(b[8:24], a16[:])
		binary.LittleEndian.PutUint32(b[24:], uint32(scope))
	}
	return nil
}

// sockaddr reads a SOCKADDR_INET; another family than AF_INET and
// AF_INET6 gives the zero AddrPort.
func sockaddr(b []byte) netip.AddrPort {
	port := binary.BigEndian.Uint16(b[2:])
	switch binary.LittleEndian.Uint16(b[0:]) {
	case afInet:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port)
	case afInet6:
		a := netip.AddrFrom16([16]byte(b[8:24]))
		if scope := binary.LittleEndian.Uint32(b[24:]); scope != 0 {
			a = a.WithZone(strconv.FormatUint(uint64(scope), 10))
		}
		return netip.AddrPortFrom(a, port)
	}
	return netip.AddrPort{}
}

// parse decodes a configuration as the driver writes it. It reads only
// within b: counts that run past b's end are an error, not a panic, and
// the memory it takes is bounded by len(b).
func parse(b []byte) (*rawInterface, error) {
	short := func(what string) (*rawInterface, error) {
		return nil, fmt.Errorf("driver configuration of %d bytes ends within %s", len(b), what)
	}
	if len(b) < ifaceSize {
		return short("the interface")
	}
	le := binary.LittleEndian
	r := &rawInterface{
		Flags:      le.Uint32(b[ifaceFlags:]),
		ListenPort: le.Uint16(b[ifaceListenPort:]),
		PrivateKey: engine.Key(b[ifacePrivateKey:]),
		PublicKey:  engine.Key(b[ifacePublicKey:]),
	}
	n := le.Uint32(b[ifacePeerCount:])
	rest := b[ifaceSize:]
	for i := uint32(0); i < n; i++ {
		if len(rest) < peerSize {
			return short(fmt.Sprintf("peer %d", i))
		}
		pb := rest[:peerSize]
		p := rawPeer{
			Flags:         le.Uint32(pb[peerFlags:]),
			PublicKey:     engine.Key(pb[peerPublicKey:]),
			PresharedKey:  engine.Key(pb[peerPresharedKey:]),
			Keepalive:     le.Uint16(pb[peerKeepalive:]),
			Endpoint:      sockaddr(pb[peerEndpoint : peerEndpoint+sockaddrSize]),
			TxBytes:       le.Uint64(pb[peerTxBytes:]),
			RxBytes:       le.Uint64(pb[peerRxBytes:]),
			LastHandshake: le.Uint64(pb[peerLastHandshake:]),
		}
		m := le.Uint32(pb[peerAllowedIPs:])
		rest = rest[peerSize:]
		if uint64(len(rest)) < uint64(m)*aipSize {
			return short(fmt.Sprintf("the allowed IPs of peer %d", i))
		}
		for j := uint32(0); j < m; j++ {
			ab := rest[:aipSize]
			rest = rest[aipSize:]
			var a netip.Addr
			switch f := le.Uint16(ab[aipFamily:]); f {
			case afInet:
				a = netip.AddrFrom4([4]byte(ab[aipAddress:]))
			case afInet6:
				a = netip.AddrFrom16([16]byte(ab[aipAddress:]))
			default:
				return nil, fmt.Errorf("driver configuration, peer %d, allowed IP %d: address family %d", i, j, f)
			}
			pfx := netip.PrefixFrom(a, int(ab[aipCidr]))
			if !pfx.IsValid() {
				return nil, fmt.Errorf("driver configuration, peer %d, allowed IP %d: prefix length %d", i, j, ab[aipCidr])
			}
			p.AllowedIPs = append(p.AllowedIPs, rawAllowedIP{Prefix: pfx, Flags: le.Uint32(ab[aipFlags:])})
		}
		r.Peers = append(r.Peers, p)
	}
	return r, nil
}
