package wg

import (
	"net/netip"
	"time"
)

// Config is a WireGuard configuration in the shape of a wg-quick(8) file:
// one [Interface] section and any number of [Peer] sections.
//
// The zero Config is valid to hold but cannot run a device: see Validate.
// A Config is a plain value; it is not safe to modify one while another
// goroutine reads it.
type Config struct {
	Interface Interface
	Peers     []Peer
}

// Interface is the [Interface] section of a wg-quick configuration.
//
// The wireguard-go engine applies PrivateKey, ListenPort and FwMark. The
// other fields are for the backend that creates the network interface
// (addresses, MTU, DNS, routing table) and, for the hook commands and
// SaveConfig, are only carried: wgkit never runs the hooks.
type Interface struct {
	// PrivateKey is the interface's Curve25519 private key. Required to run a device.
	PrivateKey Key
	// ListenPort is the UDP port to listen on; 0 picks a random free port.
	ListenPort int
	// FwMark is the firewall mark set on outgoing UDP packets; 0 means off.
	FwMark uint32
	// Addresses are the interface's addresses with their prefix lengths
	// (wg-quick's Address). An address written without a prefix length is
	// a single host (/32 or /128).
	Addresses []netip.Prefix
	// DNS are the DNS server addresses (the IP entries of wg-quick's DNS).
	DNS []netip.Addr
	// DNSSearch are the DNS search domains (the non-IP entries of wg-quick's DNS).
	DNSSearch []string
	// MTU is the interface MTU in bytes; 0 means DefaultMTU (1420). See
	// CheckMTU for the bounds and EffectiveMTU for the value backends use.
	MTU int
	// Table is wg-quick's routing table setting, kept as written: "" (auto),
	// "off", "auto", "main" or a table number or name.
	Table string
	// PreUp, PostUp, PreDown and PostDown are wg-quick's hook commands, kept
	// as written (a '#' in them does not start a comment). wgkit does not run them.
	PreUp, PostUp, PreDown, PostDown []string
	// SaveConfig is wg-quick's SaveConfig flag, carried only.
	SaveConfig bool
}

// Peer is a [Peer] section of a wg-quick configuration.
type Peer struct {
	// PublicKey is the peer's Curve25519 public key. Required.
	PublicKey Key
	// PresharedKey is an optional symmetric key mixed into the handshake;
	// the zero Key means none.
	PresharedKey Key
	// Endpoint is the peer's address as "host:port", "[v6]:port" or
	// "name:port"; empty means unknown until the peer contacts us. Host
	// names are resolved when the configuration is applied to a device,
	// not while parsing.
	Endpoint string
	// AllowedIPs are the inner addresses routed to and accepted from this peer.
	AllowedIPs []netip.Prefix
	// PersistentKeepalive is the interval of keepalive packets, rounded to
	// whole seconds by the engine; 0 means off.
	PersistentKeepalive time.Duration
}

// Bounds on a configuration, so that a hostile or broken file or Config
// costs little memory and time. ParseConfig enforces all of them and
// Validate the counts. A peer costs the engine about 24 KiB, so MaxPeers
// peers hold about 1.5 GiB.
const (
	// MaxConfigSize is the largest configuration file ParseConfig reads,
	// in bytes: room for MaxPeers peers with a few allowed IPs each.
	MaxConfigSize = 16 << 20
	// MaxConfigLine is the longest line ParseConfig reads, in bytes, not
	// counting its line ending: room for an AllowedIPs line of 50 000
	// prefixes or a long hook command. A longer list of allowed IPs can
	// be split over several AllowedIPs lines.
	MaxConfigLine = 1 << 20
	// MaxPeers is the most peers a configuration may have.
	MaxPeers = 1 << 16
	// MaxAllowedIPs is the most allowed IPs a configuration may have, all
	// its peers together.
	MaxAllowedIPs = 1 << 20
)
