package wg

import (
	"strings"
	"testing"
)

// FuzzParseUAPIGet checks that parseUAPIGet never panics on any engine
// reply, and that what it accepts has one peer per public_key line, with
// the key of that line, whichever line ending the text uses.
func FuzzParseUAPIGet(f *testing.F) {
	pub := strings.Repeat("5a", 32)
	f.Add("private_key=" + strings.Repeat("01", 32) + "\nlisten_port=51820\nfwmark=7\n" +
		"public_key=" + pub + "\npreshared_key=" + strings.Repeat("00", 32) + "\nprotocol_version=1\n" +
		"endpoint=[::1]:51821\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\n" +
		"tx_bytes=148\nrx_bytes=92\npersistent_keepalive_interval=25\nallowed_ip=10.0.0.0/24\nallowed_ip=fd00::/64\n" +
		"public_key=" + strings.Repeat("7b", 32) + "\npreshared_key=" + strings.Repeat("ff", 32) + "\nerrno=0\n\n")
	f.Add("errno=-22\n")
	f.Add("public_key=zz\n")
	f.Fuzz(func(t *testing.T, text string) {
		st, err := parseUAPIGet(text)
		crlf, errCRLF := parseUAPIGet(strings.ReplaceAll(text, "\n", "\r\n"))
		if (err == nil) != (errCRLF == nil) && !strings.Contains(text, "\r") {
			t.Fatalf("LF: %v; CRLF: %v", err, errCRLF)
		}
		if err != nil {
			return
		}
		var keys []string
		for line := range strings.Lines(text) {
			if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "public_key="); ok {
				keys = append(keys, v)
			}
		}
		if len(st.peers) != len(keys) {
			t.Fatalf("%d peers from %d public_key lines", len(st.peers), len(keys))
		}
		for i, p := range st.peers {
			if k, _ := parseHexKey(keys[i]); k != p.PublicKey {
				t.Errorf("peer %d: key %v, want the line's %s", i, p.PublicKey, keys[i])
			}
		}
		if errCRLF == nil && len(crlf.peers) != len(st.peers) {
			t.Errorf("CRLF: %d peers, LF: %d", len(crlf.peers), len(st.peers))
		}
	})
}
