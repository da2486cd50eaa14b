package tun

import "strings"

// prefixError is an error of tun's that wraps one from a package below
// it (wg, kernelwg, wgnt, netconf): its message is prefix and the
// cause's, without the cause's own package prefix, so that it carries one
// ("tun: open wg0: invalid config: ...", not "tun: open wg0: wg: invalid
// config: ..."). errors.Is and errors.As see the cause.
type prefixError struct {
	prefix string // "tun: open wg0: ", "kernel engine: "
	err    error
}

func (e *prefixError) Error() string { return e.prefix + unprefixed(e.err.Error()) }

func (e *prefixError) Unwrap() error { return e.err }

// unprefixed returns msg without one leading package prefix of those
// whose errors tun wraps.
func unprefixed(msg string) string {
	for _, p := range [...]string{"wg: ", "kernelwg: ", "wgnt: ", "netconf: ", "engine: "} {
		if m, ok := strings.CutPrefix(msg, p); ok {
			return m
		}
	}
	return msg
}
