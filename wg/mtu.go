package wg

import (
	"fmt"
	"net/netip"
	"slices"
)

// DefaultMTU is the tunnel MTU in bytes that every backend uses when a
// config sets none (Interface.MTU 0): wg-quick's 1420, which leaves room
// for WireGuard's 80 bytes of IPv6 and UDP headers on a 1500-byte link.
const DefaultMTU = 1420

// The MTU rule of CheckMTU: 576 is the smallest IPv4 datagram every host
// must accept, 1280 the smallest link IPv6 runs on, and 65535 the largest
// a 16-bit length allows.
const (
	minMTU     = 576
	minMTUIPv6 = 1280
	maxMTU     = 65535
)

// CheckMTU reports whether mtu, in bytes, is an MTU a tunnel with the
// addresses addrs can run with: 0 (DefaultMTU), or 576..65535, or
// 1280..65535 when any address is IPv6. It is the one MTU rule of wgkit:
// ParseConfig, MarshalText, Validate and every backend apply it. The error
// wraps ErrInvalidConfig. CheckMTU is safe for concurrent use.
func CheckMTU(mtu int, addrs []netip.Prefix) error {
	if err := checkMTU(mtu, addrs); err != nil {
		return fmt.Errorf("wg: %w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// EffectiveMTU returns the MTU in bytes a backend gives the tunnel: in.MTU,
// or DefaultMTU when in.MTU is 0.
func (in *Interface) EffectiveMTU() int {
	if in.MTU == 0 {
		return DefaultMTU
	}
	return in.MTU
}

// checkMTU is CheckMTU without the package prefix, for callers that add
// their own context.
func checkMTU(mtu int, addrs []netip.Prefix) error {
	if mtu == 0 {
		return nil
	}
	lo, hi := mtuRange(addrs)
	if mtu >= lo && mtu <= hi {
		return nil
	}
	if lo == minMTUIPv6 {
		return fmt.Errorf("MTU %d out of range %d..%d (an address is IPv6)", mtu, lo, hi)
	}
	return fmt.Errorf("MTU %d out of range %d..%d", mtu, lo, hi)
}

// mtuRange returns the bounds of a nonzero MTU for a tunnel with addrs.
func mtuRange(addrs []netip.Prefix) (lo, hi int) {
	if slices.ContainsFunc(addrs, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
		return minMTUIPv6, maxMTU
	}
	return minMTU, maxMTU
}
