package wg

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"strings"
	"testing"
)

// repeatReader yields n copies of b without holding them in memory.
type repeatReader struct {
	b byte
	n int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n)]
	for i := range p {
		p[i] = r.b
	}
	r.n -= int64(len(p))
	return len(p), nil
}

// maxErrorLen bounds the length of any ParseConfig error message.
const maxErrorLen = 250

func TestParseConfigBounds(t *testing.T) {
	peerB := "[Peer]\nPublicKey = " + pubB + "\n"
	// A comment line of 64 bytes: MaxConfigSize/64 of them fill the cap.
	comment := "#" + strings.Repeat("c", 62) + "\n"
	fullFile := strings.Repeat(comment, MaxConfigSize/len(comment))
	// AllowedIPs lines of 1<<16 entries each.
	ipsLine := "AllowedIPs = " + strings.TrimSuffix(strings.Repeat("10.0.0.0/8,", 1<<16), ",") + "\n"
	var manyPeers strings.Builder
	for range MaxPeers + 1 {
		manyPeers.WriteString(peerB)
	}
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name     string
		in       string
		wantLine int
		wantMsg  string // "" for success
	}{
		{"line at the cap", "[Interface]\nPostUp = " + long(MaxConfigLine-9) + "\n", 0, ""},
		{"line over the cap", "[Interface]\nPostUp = " + long(MaxConfigLine-8) + "\n", 2, "line longer than 1048576 bytes"},
		{"comment line over the cap", "#" + long(MaxConfigLine) + "\n", 1, "line longer than 1048576 bytes"},
		{"file at the cap", fullFile, 0, ""},
		{"file over the cap", fullFile + "#\n", MaxConfigSize/len(comment) + 1, "config longer than 16777216 bytes"},
		{"peers at the cap", strings.TrimSuffix(manyPeers.String(), peerB), 0, ""},
		{"peers over the cap", manyPeers.String(), 2*MaxPeers + 1, "more than 65536 peers"},
		{"allowed IPs at the cap", peerB + strings.Repeat(ipsLine, 16), 0, ""},
		{"allowed IPs over the cap", peerB + strings.Repeat(ipsLine, 16) + "AllowedIPs = 10.0.0.0/8\n", 19, "more than 1048576 allowed IPs in all"},
		{"host name at the cap", peerB + "Endpoint = " + long(253) + ":1\n", 0, ""},
		{"host name over the cap", peerB + "Endpoint = " + long(254) + ":1\n", 3, `host name "` + long(40) + `"... is longer than 253 bytes`},
		{"host name of 1 MiB", peerB + "Endpoint = " + long(1<<20-20) + ":1\n", 3, "is longer than 253 bytes"},
		{"search domain at the cap", "[Interface]\nDNS = " + long(253) + "\n", 0, ""},
		{"search domain over the cap", "[Interface]\nDNS = " + long(254) + "\n", 2, "DNS search domain \"" + long(40) + "\"... is longer than 253 bytes"},
		{"zone over the cap", peerB + "Endpoint = [fe80::1%" + long(254) + "]:1\n", 3, "bad IPv6 address"},
		{"huge bad prefix quoted short", peerB + "AllowedIPs = " + long(1<<20-20) + "\n", 3, `bad address "` + long(40) + `"...`},
		{"huge unknown key quoted short", "[Interface]\n" + long(1<<20-20) + " = 1\n", 2, `unknown key "` + long(40) + `"...`},
		{"quote cut on a character boundary", "[Interface]\n" + long(39) + "é = 1\n", 2, `unknown key "` + long(39) + `"...`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig(strings.NewReader(tt.in))
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("ParseConfig: %.300v", err)
				}
				if c == nil {
					t.Fatal("nil Config")
				}
				return
			}
			var cerr *ConfigError
			if !errors.As(err, &cerr) {
				t.Fatalf("error %.300v (%T) is not a *ConfigError", err, err)
			}
			if cerr.Line != tt.wantLine {
				t.Errorf("error on line %d, want %d", cerr.Line, tt.wantLine)
			}
			if msg := err.Error(); len(msg) > maxErrorLen {
				t.Errorf("error of %d bytes, want at most %d: %.300s", len(msg), maxErrorLen, msg)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %.300q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

// TestParseConfigHugeLineAllocs checks that a 50 MiB line costs neither
// memory nor a long message: ParseConfig stops at the line cap.
func TestParseConfigHugeLineAllocs(t *testing.T) {
	tests := []struct {
		name   string
		prefix string
		b      byte
	}{
		{"garbage", "", 'a'},
		{"hook", "[Interface]\nPostUp = ", 'x'},
		{"allowed IPs", "[Peer]\nPublicKey = " + pubB + "\nAllowedIPs = ", ','},
		{"spaces", "[Interface]\nPrivateKey = ", ' '},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err = ParseConfig(io.MultiReader(strings.NewReader(tt.prefix), &repeatReader{b: tt.b, n: 50 << 20}))
			runtime.ReadMemStats(&after)
			var cerr *ConfigError
			if !errors.As(err, &cerr) || !strings.Contains(err.Error(), "line longer than") {
				t.Fatalf("error %.300v, want a *ConfigError for a long line", err)
			}
			if len(err.Error()) > maxErrorLen {
				t.Errorf("error of %d bytes", len(err.Error()))
			}
			// The line cap and the reader's buffer, with room for the
			// runtime's own allocations.
			const bound = 8 * MaxConfigLine
			if got := after.TotalAlloc - before.TotalAlloc; got > bound {
				t.Errorf("ParseConfig allocated %d KiB for a 50 MiB line, want at most %d KiB", got>>10, bound>>10)
			}
		})
	}
}

func TestValidateBounds(t *testing.T) {
	priv := mustKey(t)
	peers := func(n, ips int) []Peer {
		out := make([]Peer, n)
		for i := range out {
			var k Key
			k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
			k[31] = 1
			out[i] = Peer{PublicKey: k}
		}
		out[0].AllowedIPs = make([]netip.Prefix, ips)
		for i := range out[0].AllowedIPs {
			out[0].AllowedIPs[i] = netip.MustParsePrefix("10.0.0.0/8")
		}
		return out
	}
	tests := []struct {
		name    string
		peers   []Peer
		wantErr string
	}{
		{"peers at the cap", peers(MaxPeers, 1), ""},
		{"peers over the cap", peers(MaxPeers+1, 1), "more than 65536 peers"},
		{"allowed IPs at the cap", peers(1, MaxAllowedIPs), ""},
		{"allowed IPs over the cap", peers(2, MaxAllowedIPs+1), "more than 1048576 allowed IPs in all"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (&Config{Interface: Interface{PrivateKey: priv}, Peers: tt.peers}).Validate()
			got := fmt.Sprint(err)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || got != "wg: invalid config: "+tt.wantErr {
				t.Errorf("Validate = %v, want %q wrapping ErrInvalidConfig", err, "wg: invalid config: "+tt.wantErr)
			}
		})
	}
}
