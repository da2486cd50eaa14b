package wg

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file translates between typed values and the text of wireguard-go's
// configuration protocol (https://www.wireguard.com/xplatform/). The text is
// an internal detail: nothing outside this package sees it.

// uapiWriter builds a UAPI "set" body.
type uapiWriter struct {
	b strings.Builder
}

func (w *uapiWriter) key(name string, k Key) {
	w.b.WriteString(name)
	w.b.WriteByte('=')
	w.b.WriteString(hex.EncodeToString(k[:]))
	w.b.WriteByte('\n')
}

func (w *uapiWriter) line(name, value string) {
	w.b.WriteString(name)
	w.b.WriteByte('=')
	w.b.WriteString(value)
	w.b.WriteByte('\n')
}

func (w *uapiWriter) String() string { return w.b.String() }

// engineState is what the engine reports through a UAPI "get".
type engineState struct {
	privateKey Key
	listenPort int
	fwMark     uint32
	peers      []PeerStatus
	psk        map[Key]Key // preshared keys by public key, only those set; not part of PeerStatus
}

// parseUAPIGet parses the body of a UAPI "get" response. Its lines are
// slices of text, not copies: with thousands of peers the copies cost
// more than the parsing.
func parseUAPIGet(text string) (*engineState, error) {
	st := &engineState{psk: make(map[Key]Key)}
	st.peers = make([]PeerStatus, 0, strings.Count(text, "\npublic_key="))
	var cur *PeerStatus // the last of st.peers, while its lines come
	var hsSec, hsNsec int64
	flush := func() {
		if cur == nil {
			return
		}
		if hsSec != 0 || hsNsec != 0 {
			cur.LastHandshake = time.Unix(hsSec, hsNsec)
		}
		cur, hsSec, hsNsec = nil, 0, 0
	}
	for rest := text; rest != ""; {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("wg: engine status: malformed line %q", line)
		}
		var err error
		switch name {
		case "private_key":
			st.privateKey, err = parseHexKey(value)
		case "listen_port":
			st.listenPort, err = strconv.Atoi(value)
		case "fwmark":
			var m uint64
			m, err = strconv.ParseUint(value, 10, 32)
			st.fwMark = uint32(m)
		case "public_key":
			flush()
			st.peers = append(st.peers, PeerStatus{})
			cur = &st.peers[len(st.peers)-1]
			cur.PublicKey, err = parseHexKey(value)
		case "errno":
			if value != "0" {
				err = fmt.Errorf("errno %s", value)
			}
		default:
			if cur == nil {
				// Unknown interface-level keys from a newer engine are ignored.
				continue
			}
			err = cur.setUAPI(st, name, value, &hsSec, &hsNsec)
		}
		if err != nil {
			return nil, fmt.Errorf("wg: engine status: %s: %w", name, err)
		}
	}
	flush()
	return st, nil
}

func (p *PeerStatus) setUAPI(st *engineState, name, value string, hsSec, hsNsec *int64) error {
	var err error
	switch name {
	case "preshared_key":
		var k Key
		if k, err = parseHexKey(value); err == nil && !k.IsZero() {
			st.psk[p.PublicKey] = k
		}
	case "endpoint":
		p.Endpoint, err = netip.ParseAddrPort(value)
	case "last_handshake_time_sec":
		*hsSec, err = strconv.ParseInt(value, 10, 64)
	case "last_handshake_time_nsec":
		*hsNsec, err = strconv.ParseInt(value, 10, 64)
	case "tx_bytes":
		p.TxBytes, err = strconv.ParseUint(value, 10, 64)
	case "rx_bytes":
		p.RxBytes, err = strconv.ParseUint(value, 10, 64)
	case "persistent_keepalive_interval":
		var s int
		s, err = strconv.Atoi(value)
		p.PersistentKeepalive = time.Duration(s) * time.Second
	case "allowed_ip":
		var pfx netip.Prefix
		pfx, err = netip.ParsePrefix(value)
		p.AllowedIPs = append(p.AllowedIPs, pfx)
	}
	// protocol_version and keys a newer engine adds are ignored.
	return err
}

func parseHexKey(s string) (Key, error) {
	var k Key
	if hex.DecodedLen(len(s)) != KeyLen {
		return Key{}, fmt.Errorf("%w: want %d hex characters", ErrInvalidKey, 2*KeyLen)
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return Key{}, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	return k, nil
}

// prefixesEqual reports whether a and b hold the same prefixes, as the
// engine stores them (masked, in any order).
func prefixesEqual(a, b []netip.Prefix) bool {
	if len(a) == len(b) && !slices.ContainsFunc(a, func(p netip.Prefix) bool { return p != p.Masked() }) &&
		slices.Equal(a, b) {
		return true // the common case, without allocating: b as the engine has it
	}
	norm := func(ps []netip.Prefix) []netip.Prefix {
		out := make([]netip.Prefix, len(ps))
		for i, p := range ps {
			out[i] = p.Masked()
		}
		slices.SortFunc(out, comparePrefix)
		return slices.Compact(out)
	}
	return slices.Equal(norm(a), norm(b))
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
