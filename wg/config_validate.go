package wg

import (
	"errors"
	"fmt"
	"hash/maphash"
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
	return c.validate(c.Interface.PrivateKey.PublicKey())
}

// validate is Validate for a caller that derived own, the public key of
// c.Interface.PrivateKey, already (one scalar multiplication, the
// dearest step of Validate for a few peers). c must not be nil.
func (c *Config) validate(own Key) error {
	if err := c.Interface.validate(); err != nil {
		return fmt.Errorf("wg: %w: [Interface]: %w", ErrInvalidConfig, err)
	}
	if err := c.validateCounts(); err != nil {
		return err
	}
	seen := newKeySet(len(c.Peers))
	for i := range c.Peers {
		p := &c.Peers[i]
		err := p.validateKey(own)
		if err == nil {
			if j, dup := seen.add(c.Peers, i); dup {
				err = fmt.Errorf("public key %v already used by peer %d", p.PublicKey, j)
			}
		}
		if err == nil {
			err = p.validateFields()
		}
		if err != nil {
			return fmt.Errorf("wg: %w: peer %d: %w", ErrInvalidConfig, i, err)
		}
	}
	return nil
}

// validateCounts checks c's peers and allowed IPs against MaxPeers and
// MaxAllowedIPs.
func (c *Config) validateCounts() error {
	if len(c.Peers) > MaxPeers {
		return fmt.Errorf("wg: %w: %w", ErrInvalidConfig, errTooManyPeers)
	}
	allowed := 0
	for i := range c.Peers {
		allowed += len(c.Peers[i].AllowedIPs)
	}
	if allowed > MaxAllowedIPs {
		return fmt.Errorf("wg: %w: %w", ErrInvalidConfig, errTooManyAllowedIPs)
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

// validate checks p on its own: everything Validate checks of a peer
// but that its key is unique.
func (p *Peer) validate(own Key) error {
	if err := p.validateKey(own); err != nil {
		return err
	}
	return p.validateFields()
}

// validateKey checks that p has a public key, not own.
func (p *Peer) validateKey(own Key) error {
	if p.PublicKey.IsZero() {
		return errors.New("no public key")
	}
	if p.PublicKey == own {
		return fmt.Errorf("public key %v is the interface's own public key", p.PublicKey)
	}
	return nil
}

// validateFields checks p's allowed IPs, endpoint and keepalive.
func (p *Peer) validateFields() error {
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

// keySet finds peers with the same public key: an open-addressing table
// of peer numbers, a quarter of a map[Key]int's memory (4 bytes a slot,
// two slots a peer) and no work per entry beyond one hash, seeded per
// set so that no configuration can aim at collisions. It holds at most
// MaxPeers peers.
type keySet struct {
	seed  maphash.Seed
	slots []int32 // a peer's number + 1; 0 is empty. A power of two long.
}

// newKeySet returns a set with room for n peers.
func newKeySet(n int) keySet {
	size := 8
	for size < 2*n {
		size <<= 1
	}
	return keySet{seed: maphash.MakeSeed(), slots: make([]int32, size)}
}

// add records peers[i]'s key, or returns the number of the earlier peer
// that has it.
func (s *keySet) add(peers []Peer, i int) (int, bool) {
	k := &peers[i].PublicKey
	mask := uint64(len(s.slots) - 1)
	for h := maphash.Bytes(s.seed, k[:]) & mask; ; h = (h + 1) & mask {
		j := int(s.slots[h]) - 1
		if j < 0 {
			s.slots[h] = int32(i + 1)
			return 0, false
		}
		if peers[j].PublicKey == *k {
			return j, true
		}
	}
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
