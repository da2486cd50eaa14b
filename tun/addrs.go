//go:build linux || windows

package tun

import (
	"net/netip"
	"slices"
)

// configured reports whether a is one of the addresses of ps. The
// platforms' linkAddrs use it to keep a link-local address the config
// asked for while leaving out those the system adds by itself.
func configured(ps []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Addr() == a })
}
