package wg

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// MarshalText implements encoding.TextMarshaler: it writes c in the
// canonical wg-quick(8) format that ParseConfig reads, [Interface] first,
// then each [Peer], leaving out zero and empty fields. FwMark is written
// in hex as wg(8) showconf does, PersistentKeepalive in seconds, and DNS
// servers and search domains share one DNS line.
//
// For every Config it accepts, ParseConfig of the output gives back an
// equal Config. It refuses, with an error, any value that could not come
// back the same: an invalid prefix or address, a ListenPort or
// PersistentKeepalive out of range, an MTU CheckMTU refuses or a keepalive that is not whole
// seconds, a hook command with a line break or surrounding whitespace, a
// search domain that ParseConfig would not read as one, a Table with
// whitespace, or an Endpoint not in the form ParseConfig stores.
// MarshalText does not call Validate: a zero private key, for instance,
// is simply left out.
func (c *Config) MarshalText() ([]byte, error) {
	if c == nil {
		return nil, errors.New("wg: marshal config: nil *Config")
	}
	var b strings.Builder
	if err := writeInterface(&b, &c.Interface); err != nil {
		return nil, fmt.Errorf("wg: marshal config: [Interface]: %w", err)
	}
	for i := range c.Peers {
		b.WriteString("\n")
		if err := writePeer(&b, &c.Peers[i]); err != nil {
			return nil, fmt.Errorf("wg: marshal config: peer %d: %w", i, err)
		}
	}
	return []byte(b.String()), nil
}

func writeLine(b *strings.Builder, key, value string) {
	b.WriteString(key)
	b.WriteString(" = ")
	b.WriteString(value)
	b.WriteString("\n")
}

func writeInterface(b *strings.Builder, in *Interface) error {
	b.WriteString("[Interface]\n")
	if !in.PrivateKey.IsZero() {
		writeLine(b, "PrivateKey", in.PrivateKey.String())
	}
	if in.ListenPort < 0 || in.ListenPort > 65535 {
		return fmt.Errorf("listen port %d out of range 0..65535", in.ListenPort)
	}
	if in.ListenPort != 0 {
		writeLine(b, "ListenPort", strconv.Itoa(in.ListenPort))
	}
	if in.FwMark != 0 {
		writeLine(b, "FwMark", "0x"+strconv.FormatUint(uint64(in.FwMark), 16))
	}
	if err := writePrefixes(b, "Address", in.Addresses); err != nil {
		return err
	}
	if err := writeDNS(b, in.DNS, in.DNSSearch); err != nil {
		return err
	}
	if err := checkMTU(in.MTU, in.Addresses); err != nil {
		return err
	}
	if in.MTU != 0 {
		writeLine(b, "MTU", strconv.Itoa(in.MTU))
	}
	if err := checkTable(in.Table); err != nil {
		return err
	}
	if in.Table != "" {
		writeLine(b, "Table", in.Table)
	}
	if in.SaveConfig {
		writeLine(b, "SaveConfig", "true")
	}
	hooks := []struct {
		key  string
		cmds []string
	}{{"PreUp", in.PreUp}, {"PostUp", in.PostUp}, {"PreDown", in.PreDown}, {"PostDown", in.PostDown}}
	for _, h := range hooks {
		for _, cmd := range h.cmds {
			if err := checkHook(cmd); err != nil {
				return fmt.Errorf("%s %w", h.key, err)
			}
			writeLine(b, h.key, cmd)
		}
	}
	return nil
}

// checkHook refuses a hook command that would not read back the same:
// one with a line break, or with whitespace that ParseConfig would trim.
func checkHook(cmd string) error {
	if strings.ContainsAny(cmd, "\n") {
		return fmt.Errorf("command %q contains a line break", cmd)
	}
	if trimSpace(cmd) != cmd {
		return fmt.Errorf("command %q has leading or trailing whitespace", cmd)
	}
	return nil
}

func writePrefixes(b *strings.Builder, key string, pfxs []netip.Prefix) error {
	if len(pfxs) == 0 {
		return nil
	}
	s := make([]string, len(pfxs))
	for i, p := range pfxs {
		if !p.IsValid() {
			return fmt.Errorf("%s: invalid prefix %v", key, p)
		}
		s[i] = p.String()
	}
	writeLine(b, key, strings.Join(s, ", "))
	return nil
}

func writeDNS(b *strings.Builder, servers []netip.Addr, search []string) error {
	if len(servers)+len(search) == 0 {
		return nil
	}
	s := make([]string, 0, len(servers)+len(search))
	for _, a := range servers {
		if !a.IsValid() {
			return errors.New("DNS: invalid address")
		}
		if err := checkZone(a); err != nil {
			return fmt.Errorf("DNS: %w", err)
		}
		s = append(s, a.String())
	}
	for _, d := range search {
		if err := checkSearchDomain(d); err != nil {
			return err
		}
		s = append(s, d)
	}
	writeLine(b, "DNS", strings.Join(s, ", "))
	return nil
}

func writePeer(b *strings.Builder, p *Peer) error {
	b.WriteString("[Peer]\n")
	// Always written, even if zero, so the section reads back as a peer;
	// Validate rejects a zero public key.
	writeLine(b, "PublicKey", p.PublicKey.String())
	if !p.PresharedKey.IsZero() {
		writeLine(b, "PresharedKey", p.PresharedKey.String())
	}
	if err := writePrefixes(b, "AllowedIPs", p.AllowedIPs); err != nil {
		return err
	}
	if p.Endpoint != "" {
		ep, err := parseEndpoint(p.Endpoint)
		if err != nil {
			return err
		}
		if ep != p.Endpoint {
			return fmt.Errorf("endpoint %q is not in the canonical form %q", p.Endpoint, ep)
		}
		writeLine(b, "Endpoint", ep)
	}
	if err := checkKeepalive(p.PersistentKeepalive); err != nil {
		return err
	}
	if p.PersistentKeepalive != 0 {
		writeLine(b, "PersistentKeepalive", strconv.FormatInt(int64(p.PersistentKeepalive/time.Second), 10))
	}
	return nil
}

// maxKeepalive is the largest PersistentKeepalive wg(8) accepts.
const maxKeepalive = 65535 * time.Second

func checkKeepalive(d time.Duration) error {
	if d < 0 || d > maxKeepalive || d%time.Second != 0 {
		return fmt.Errorf("persistent keepalive %v is not a whole number of seconds in 0..65535", d)
	}
	return nil
}
