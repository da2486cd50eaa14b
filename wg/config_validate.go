package wg

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// ErrInvalidConfig is wrapped by the errors Validate returns.
var ErrInvalidConfig = errors.New("invalid config")

// The errors for a configuration over the bounds, from ParseConfig and
// Validate alike.
var (
	errTooManyPeers      = fmt.Errorf("more than %d peers", MaxPeers)
	errTooManyAllowedIPs = fmt.Errorf("more than %d allowed IPs in all", MaxAllowedIPs)
)

// Validate reports the first problem that keeps a device from running c,
// as an error wrapping ErrInvalidConfig, or nil. It checks:
//
//   - the private key is set;
//   - ListenPort is 0..65535;
//   - MTU passes CheckMTU: 0 (DefaultMTU) or 576..65535, or 1280..65535
//     when any address in Addresses is IPv6 (IPv6 needs links of 1280 bytes);
//   - every address, DNS server and allowed IP is valid;
//   - every peer has a non-zero public key, not equal to our own public
//     key nor to another peer's;
//   - every Endpoint is "host:port" or "[v6]:port" as ParseConfig reads it;
//   - every PersistentKeepalive is 0..65535 seconds;
//   - there are at most MaxPeers peers and MaxAllowedIPs allowed IPs in all.
//
// Validate does not resolve endpoints and ignores the fields wgkit only
// carries (Table, hooks, SaveConfig). A nil Config is invalid.
func (c *Config) Validate() error {
	if c == nil {
		return fmt.Errorf("wg: %w: nil *Config", ErrInvalidConfig)
	}
	if err := c.Interface.validate(); err != nil {
		return fmt.Errorf("wg: %w: [Interface]: %w", ErrInvalidConfig, err)
	}
	if len(c.Peers) > MaxPeers {
		return fmt.Errorf("wg: %w: %w", ErrInvalidConfig, errTooManyPeers)
	}
	allowed := 0
	for _, p := range c.Peers {
		allowed += len(p.AllowedIPs)
	}
	if allowed > MaxAllowedIPs {
		return fmt.Errorf("wg: %w: %w", ErrInvalidConfig, errTooManyAllowedIPs)
	}
	own := c.Interface.PrivateKey.PublicKey()
	seen := make(map[Key]int, len(c.Peers))
	for i, p := range c.Peers {
		if err := p.validate(own, seen, i); err != nil {
			return fmt.Errorf("wg: %w: peer %d: %w", ErrInvalidConfig, i, err)
		}
	}
	return nil
}

func (in *Interface) validate() error {
	if in.PrivateKey.IsZero() {
		return errors.New("no private key")
	}
	if in.ListenPort < 0 || in.ListenPort > 65535 {
		return fmt.Errorf("listen port %d out of range 0..65535", in.ListenPort)
	}
	if err := validPrefixes("address", in.Addresses); err != nil {
		return err
	}
	for _, a := range in.DNS {
		if !a.IsValid() {
			return errors.New("invalid DNS server address")
		}
	}
	return checkMTU(in.MTU, in.Addresses)
}

func validPrefixes(what string, pfxs []netip.Prefix) error {
	for _, p := range pfxs {
		if !p.IsValid() {
			return fmt.Errorf("invalid %s prefix %v", what, p)
		}
	}
	return nil
}

// validate checks peer number i; seen maps the public keys of the peers
// before it to their numbers, and gets p's.
func (p *Peer) validate(own Key, seen map[Key]int, i int) error {
	if p.PublicKey.IsZero() {
		return errors.New("no public key")
	}
	if p.PublicKey == own {
		return fmt.Errorf("public key %v is the interface's own public key", p.PublicKey)
	}
	if j, dup := seen[p.PublicKey]; dup {
		return fmt.Errorf("public key %v already used by peer %d", p.PublicKey, j)
	}
	seen[p.PublicKey] = i
	if err := validPrefixes("allowed IP", p.AllowedIPs); err != nil {
		return err
	}
	if p.Endpoint != "" {
		if _, err := parseEndpoint(p.Endpoint); err != nil {
			return err
		}
	}
	if p.PersistentKeepalive < 0 || p.PersistentKeepalive > maxKeepalive {
		return fmt.Errorf("persistent keepalive %v out of range 0..65535s", p.PersistentKeepalive)
	}
	return nil
}

// Clone returns a deep copy of c: no slice of the copy shares memory
// with c. Clone of nil is nil.
func (c *Config) Clone() *Config {
	if c == nil {
		return nil
	}
	out := &Config{Interface: c.Interface, Peers: slices.Clone(c.Peers)}
	in := &out.Interface
	in.Addresses = slices.Clone(in.Addresses)
	in.DNS = slices.Clone(in.DNS)
	in.DNSSearch = slices.Clone(in.DNSSearch)
	in.PreUp = slices.Clone(in.PreUp)
	in.PostUp = slices.Clone(in.PostUp)
	in.PreDown = slices.Clone(in.PreDown)
	in.PostDown = slices.Clone(in.PostDown)
	for i := range out.Peers {
		out.Peers[i].AllowedIPs = slices.Clone(out.Peers[i].AllowedIPs)
	}
	return out
}
