// Package wgdump parses the output of `wg show INTERFACE dump` (wg(8))
// into internal/engine's State, so that tests can compare what wg(8)
// reports of an interface with what wgkit reports of it.
//
// The format, from wg(8): one line for the interface, then one per
// peer, fields separated by tabs. The interface's are the private key,
// the public key, the listen port and the fwmark ("off" or a number, in
// hex with 0x); a peer's are its public key, the preshared key, the
// endpoint, the allowed IPs (comma-separated), the latest handshake in
// Unix seconds (0: never), the bytes received and sent, and the
// persistent keepalive ("off" or seconds). "(none)" stands for an unset
// key, endpoint or list.
package wgdump

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/wgkit/wgkit/internal/engine"
)

// MaxLen bounds the text Parse takes, in bytes: room for about 30 000
// peers with a few allowed IPs each.
const MaxLen = 16 << 20

// Parse parses text, the output of `wg show INTERFACE dump` (a trailing
// newline is optional). The State's LastHandshake has whole seconds, as
// wg(8) prints it. Errors name the line, quoting at most its first 40
// bytes.
func Parse(text string) (*engine.State, error) {
	if len(text) > MaxLen {
		return nil, fmt.Errorf("wgdump: %d bytes, more than %d", len(text), MaxLen)
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	st := &engine.State{}
	for i, line := range lines {
		var err error
		if i == 0 {
			err = parseInterface(st, line)
		} else {
			var p engine.PeerState
			if err = parsePeer(&p, line); err == nil {
				st.Peers = append(st.Peers, p)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("wgdump: line %d %.40q: %w", i+1, line, err)
		}
	}
	return st, nil
}

// Show runs `wg show iface dump` (wg(8) on PATH) and parses its output.
// ctx bounds the run: when it ends, wg is killed. An error from wg
// carries its output.
func Show(ctx context.Context, iface string) (*engine.State, error) {
	out, err := exec.CommandContext(ctx, "wg", "show", iface, "dump").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("wgdump: wg show %s dump: %w\n%s", iface, err, out)
	}
	return Parse(string(out))
}

func parseInterface(st *engine.State, line string) error {
	f := strings.Split(line, "\t")
	if len(f) != 4 {
		return fmt.Errorf("%d fields, want 4", len(f))
	}
	var err error
	if st.PrivateKey, err = parseKey(f[0]); err != nil {
		return fmt.Errorf("private key: %w", err)
	}
	if st.PublicKey, err = parseKey(f[1]); err != nil {
		return fmt.Errorf("public key: %w", err)
	}
	port, err := strconv.ParseUint(f[2], 10, 16)
	if err != nil {
		return fmt.Errorf("listen port: %w", err)
	}
	st.ListenPort = int(port)
	if f[3] != "off" {
		m, err := strconv.ParseUint(f[3], 0, 32)
		if err != nil {
			return fmt.Errorf("fwmark: %w", err)
		}
		st.FwMark = uint32(m)
	}
	return nil
}

func parsePeer(p *engine.PeerState, line string) error {
	f := strings.Split(line, "\t")
	if len(f) != 8 {
		return fmt.Errorf("%d fields, want 8", len(f))
	}
	var err error
	if p.PublicKey, err = parseKey(f[0]); err != nil {
		return fmt.Errorf("public key: %w", err)
	}
	if p.PresharedKey, err = parseKey(f[1]); err != nil {
		return fmt.Errorf("preshared key: %w", err)
	}
	if f[2] != "(none)" {
		if p.Endpoint, err = netip.ParseAddrPort(f[2]); err != nil {
			return fmt.Errorf("endpoint: %w", err)
		}
		p.Endpoint = netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port())
	}
	if f[3] != "(none)" {
		for _, s := range strings.Split(f[3], ",") {
			pfx, err := netip.ParsePrefix(s)
			if err != nil {
				return fmt.Errorf("allowed IPs: %w", err)
			}
			p.AllowedIPs = append(p.AllowedIPs, pfx)
		}
	}
	hs, err := strconv.ParseInt(f[4], 10, 64)
	if err != nil || hs < 0 {
		return fmt.Errorf("latest handshake %.20q: not a Unix time", f[4])
	}
	if hs != 0 {
		p.LastHandshake = time.Unix(hs, 0)
	}
	if p.RxBytes, err = strconv.ParseUint(f[5], 10, 64); err != nil {
		return fmt.Errorf("bytes received: %w", err)
	}
	if p.TxBytes, err = strconv.ParseUint(f[6], 10, 64); err != nil {
		return fmt.Errorf("bytes sent: %w", err)
	}
	if f[7] != "off" {
		ka, err := strconv.ParseUint(f[7], 10, 16)
		if err != nil {
			return fmt.Errorf("persistent keepalive: %w", err)
		}
		p.PersistentKeepalive = time.Duration(ka) * time.Second
	}
	return nil
}

// parseKey parses a base64 key, "(none)" being the zero key.
func parseKey(s string) (engine.Key, error) {
	var k engine.Key
	if s == "(none)" {
		return k, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("%.12q is not a base64 key of %d bytes", s, len(k))
	}
	copy(k[:], b)
	return k, nil
}
