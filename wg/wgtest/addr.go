package wgtest

import (
	"fmt"
	"math/big"
	"net/netip"
)

// nthAddr returns the n-th address of p (0 is the masked network address)
// or an error if it is not a host address of p: beyond p or p's last
// address (the IPv4 broadcast address; IPv6 skips it too, for symmetry).
func nthAddr(p netip.Prefix, n int) (netip.Addr, error) {
	a, err := addrAt(p, n)
	if err != nil {
		return a, err
	}
	if _, err := addrAt(p, n+1); err != nil {
		return netip.Addr{}, err
	}
	return a, nil
}

func addrAt(p netip.Prefix, n int) (netip.Addr, error) {
	base := p.Masked().Addr()
	v := new(big.Int).SetBytes(base.AsSlice())
	v.Add(v, big.NewInt(int64(n)))
	b := v.Bytes()
	out := make([]byte, base.BitLen()/8)
	if len(b) > len(out) {
		return netip.Addr{}, fmt.Errorf("wgtest: %v has no address number %d", p, n)
	}
	copy(out[len(out)-len(b):], b)
	a, _ := netip.AddrFromSlice(out)
	if !p.Contains(a) {
		return netip.Addr{}, fmt.Errorf("wgtest: %v has no address number %d", p, n)
	}
	return a, nil
}

// hostPrefix returns a as a single-address prefix (/32 or /128).
func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
