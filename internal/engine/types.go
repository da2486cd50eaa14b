package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// These types are the engines' vocabulary, on every platform: what
// wg.Device applies and reads back, in wgctrl's wgtypes shape (nil
// pointers and false flags leave a setting as it is) but with keys as
// plain arrays and addresses as netip values, so that wg can import them
// without pulling in netlink or a driver.

// Key is a Curve25519 key (public, private) or a preshared key. It has
// wg.Key's underlying type: convert with Key(k) and wg.Key(k).
type Key = [32]byte

// MaxKeepalive is the longest persistent keepalive interval the protocol
// carries (a 16-bit count of seconds).
const MaxKeepalive = 65535 * time.Second

// Config is a change to an engine's configuration. The zero Config
// changes nothing.
type Config struct {
	// PrivateKey, if set, replaces the private key; the zero key removes
	// it (the interface then neither sends nor answers handshakes).
	PrivateKey *Key
	// ListenPort, if set, is the UDP port to listen on, 0 to 65535; 0
	// picks a random free port when the interface is up.
	ListenPort *int
	// FwMark, if set, is the firewall mark of outgoing UDP packets; 0
	// switches it off. Only Linux has firewall marks: other engines
	// reject a non-zero mark.
	FwMark *uint32
	// ReplacePeers removes every peer not in Peers.
	ReplacePeers bool
	// Peers are added, updated or removed, in order.
	Peers []PeerConfig
}

// PeerConfig adds, updates or removes one peer.
type PeerConfig struct {
	// PublicKey identifies the peer. Required (not the zero key).
	PublicKey Key
	// Remove removes the peer; the other fields are then ignored.
	// Removing a peer the engine does not have is not an error.
	Remove bool
	// UpdateOnly changes the peer only if the engine has it already: a
	// peer it does not have is not added (and that is not an error).
	UpdateOnly bool
	// PresharedKey, if set, replaces the preshared key; the zero key
	// removes it.
	PresharedKey *Key
	// Endpoint, if valid, sets the peer's address; the zero AddrPort
	// leaves it as it is (a peer with none is learnt from its first
	// handshake). An IPv4-mapped IPv6 address is taken as IPv4.
	Endpoint netip.AddrPort
	// PersistentKeepalive, if set, is the keepalive interval in whole
	// seconds (less is truncated), 0 to MaxKeepalive; 0 switches it off.
	PersistentKeepalive *time.Duration
	// ReplaceAllowedIPs drops the peer's allowed IPs before AllowedIPs
	// are added; without it AllowedIPs are added to those it has.
	ReplaceAllowedIPs bool
	// AllowedIPs are inner prefixes routed to and accepted from the peer;
	// they are stored masked.
	AllowedIPs []netip.Prefix
}

// State is an engine's configuration and status as it reports them now.
type State struct {
	// PrivateKey and PublicKey are the interface's keys; zero if unset.
	PrivateKey, PublicKey Key
	// ListenPort is the UDP port the interface listens on: the configured
	// one, or the one picked at interface up when that is 0.
	ListenPort int
	// FwMark is the firewall mark of outgoing packets; 0 means off.
	FwMark uint32
	// Peers are the peers in the engine's order.
	Peers []PeerState
}

// PeerState is one peer of a State, the fields of wg.PeerStatus and its
// preshared key.
type PeerState struct {
	// PublicKey identifies the peer.
	PublicKey Key
	// PresharedKey is the preshared key; zero means none.
	PresharedKey Key
	// Endpoint is the peer's current address (configured or roamed to);
	// the zero value means unknown.
	Endpoint netip.AddrPort
	// AllowedIPs are the peer's prefixes, masked, in the engine's order.
	AllowedIPs []netip.Prefix
	// LastHandshake is the time of the last completed handshake; the zero
	// Time means none yet.
	LastHandshake time.Time
	// RxBytes and TxBytes count the bytes received from and sent to the
	// peer, WireGuard overhead included.
	RxBytes, TxBytes uint64
	// PersistentKeepalive is the keepalive interval; 0 means off.
	PersistentKeepalive time.Duration
}

// Validate reports the first value of c that no engine accepts: a port
// or keepalive out of range, a zero public key, an endpoint without a
// port, an invalid prefix. It does not look at peers' fields when they
// are removed.
func (c *Config) Validate() error {
	if c.ListenPort != nil && (*c.ListenPort < 0 || *c.ListenPort > 65535) {
		return fmt.Errorf("engine: listen port %d out of range 0 to 65535", *c.ListenPort)
	}
	for i := range c.Peers {
		if err := c.Peers[i].validate(); err != nil {
			return fmt.Errorf("engine: peer %d: %w", i, err)
		}
	}
	return nil
}

func (p *PeerConfig) validate() error {
	if p.PublicKey == (Key{}) {
		return errors.New("zero public key")
	}
	if p.Remove {
		return nil
	}
	if p.Endpoint.IsValid() && p.Endpoint.Port() == 0 {
		return fmt.Errorf("endpoint %s: port 0", p.Endpoint)
	}
	if k := p.PersistentKeepalive; k != nil && (*k < 0 || *k > MaxKeepalive) {
		return fmt.Errorf("persistent keepalive %v out of range 0 to %v", *k, MaxKeepalive)
	}
	for _, pfx := range p.AllowedIPs {
		if !pfx.IsValid() {
			return fmt.Errorf("invalid allowed IP prefix %v", pfx)
		}
	}
	return nil
}
