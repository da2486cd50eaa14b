package wgdump

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/wgkit/wgkit/internal/engine"
)

var cmpNet = cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})

func key(b byte) engine.Key {
	var k engine.Key
	for i := range k {
		k[i] = b
	}
	return k
}

func b64(b byte) string { k := key(b); return base64.StdEncoding.EncodeToString(k[:]) }

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		text string
		want *engine.State
		err  string
	}{
		{
			name: "interface only",
			text: "(none)\t(none)\t0\toff\n",
			want: &engine.State{},
		},
		{
			name: "two peers",
			text: b64(1) + "\t" + b64(2) + "\t51820\t0xca6c\n" +
				b64(3) + "\t(none)\t127.0.0.1:40000\t10.0.0.2/32,fd00::2/128\t1700000000\t1024\t2048\toff\n" +
				b64(4) + "\t" + b64(5) + "\t[fd00::9]:9\t(none)\t0\t0\t0\t25",
			want: &engine.State{
				PrivateKey: key(1), PublicKey: key(2), ListenPort: 51820, FwMark: 0xca6c,
				Peers: []engine.PeerState{
					{
						PublicKey: key(3), Endpoint: netip.MustParseAddrPort("127.0.0.1:40000"),
						AllowedIPs:    []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32"), netip.MustParsePrefix("fd00::2/128")},
						LastHandshake: time.Unix(1700000000, 0), RxBytes: 1024, TxBytes: 2048,
					},
					{
						PublicKey: key(4), PresharedKey: key(5), Endpoint: netip.MustParseAddrPort("[fd00::9]:9"),
						PersistentKeepalive: 25 * time.Second,
					},
				},
			},
		},
		{name: "empty", text: "", err: `wgdump: line 1 "": 1 fields, want 4`},
		{name: "bad key", text: "abc\t(none)\t0\toff", err: `wgdump: line 1 "abc\t(none)\t0\toff": private key: "abc" is not a base64 key of 32 bytes`},
		{name: "bad port", text: "(none)\t(none)\t65536\toff", err: "listen port"},
		{name: "short peer", text: "(none)\t(none)\t1\toff\n" + b64(3), err: "wgdump: line 2 " + strconv.Quote(b64(3)[:40]) + ": 1 fields, want 8"},
		{name: "bad prefix", text: "(none)\t(none)\t1\toff\n" + b64(3) + "\t(none)\t(none)\t10.0.0.0/33\t0\t0\t0\toff", err: "allowed IPs"},
		{name: "negative handshake", text: "(none)\t(none)\t1\toff\n" + b64(3) + "\t(none)\t(none)\t(none)\t-1\t0\t0\toff", err: `latest handshake "-1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.text)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Parse: %v, want an error with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpNet); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := Parse(strings.Repeat("x", MaxLen+1)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("Parse of more than MaxLen: %v", err)
	}
}

// FuzzParse checks that Parse never panics and that what it accepts
// survives formatting and parsing again unchanged.
func FuzzParse(f *testing.F) {
	f.Add("(none)\t(none)\t0\toff\n")
	f.Add(b64(1) + "\t" + b64(2) + "\t51820\t0xca6c\n" + b64(3) + "\t(none)\t127.0.0.1:4\t10.0.0.2/32\t17\t1\t2\toff\n")
	f.Add(b64(1) + "\t" + b64(2) + "\t1\t7\n" + b64(4) + "\t" + b64(5) + "\t[::ffff:1.2.3.4]:9\t(none)\t0\t0\t0\t25")
	f.Fuzz(func(t *testing.T, text string) {
		st, err := Parse(text)
		if err != nil {
			return
		}
		again, err := Parse(format(st))
		if err != nil {
			t.Fatalf("Parse(format(Parse(%q))): %v", text, err)
		}
		if diff := cmp.Diff(st, again, cmpNet); diff != "" {
			t.Errorf("round trip of %q (-first +second):\n%s", text, diff)
		}
	})
}

// format writes st as wg(8) does.
func format(st *engine.State) string {
	var b strings.Builder
	mark := "off"
	if st.FwMark != 0 {
		mark = fmt.Sprintf("0x%x", st.FwMark)
	}
	fmt.Fprintf(&b, "%s\t%s\t%d\t%s\n", formatKey(st.PrivateKey), formatKey(st.PublicKey), st.ListenPort, mark)
	for _, p := range st.Peers {
		ep, allowed, hs, ka := "(none)", "(none)", int64(0), "off"
		if p.Endpoint.IsValid() {
			ep = p.Endpoint.String()
		}
		if len(p.AllowedIPs) > 0 {
			s := make([]string, len(p.AllowedIPs))
			for i, pfx := range p.AllowedIPs {
				s[i] = pfx.String()
			}
			allowed = strings.Join(s, ",")
		}
		if !p.LastHandshake.IsZero() {
			hs = p.LastHandshake.Unix()
		}
		if p.PersistentKeepalive > 0 {
			ka = strconv.Itoa(int(p.PersistentKeepalive / time.Second))
		}
		fmt.Fprintf(&b, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", formatKey(p.PublicKey), formatKey(p.PresharedKey), ep, allowed, hs, p.RxBytes, p.TxBytes, ka)
	}
	return b.String()
}

func formatKey(k engine.Key) string {
	if k == (engine.Key{}) {
		return "(none)"
	}
	return base64.StdEncoding.EncodeToString(k[:])
}
