package wg

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParseConfig checks that ParseConfig never panics and that every
// Config it returns survives MarshalText: parsing the text again gives an
// equal Config, and marshaling that gives the same text. The seeds are
// the test configurations; testdata/fuzz/FuzzParseConfig holds inputs
// the fuzzer found interesting.
func FuzzParseConfig(f *testing.F) {
	f.Add(fullConfig)
	f.Add(fullConfigCanonical)
	for _, tt := range validConfigs(f) {
		f.Add(tt.in)
	}
	f.Add("[Interface]\nPrivateKey = " + privA + "\nAddress = 10.0.0.2/32\nDNS = 1.1.1.1\n\n[Peer]\nPublicKey = " + pubB +
		"\nAllowedIPs = 0.0.0.0/0\nEndpoint = 203.0.113.1:51820\n")
	f.Add("[Interface]\nMTU = 1\n")
	f.Add("[Peer]\nEndpoint = [::1]\n")
	f.Add("PostUp = x\n")

	f.Fuzz(func(t *testing.T, in string) {
		c, err := ParseConfig(strings.NewReader(in))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "wg: ") {
				t.Fatalf("ParseConfig error %q lacks the \"wg: \" prefix", err)
			}
			return
		}
		// ParseConfig rejects whatever MarshalText would refuse, so any
		// refusal inside checkRoundTrip, even a clear one, is a bug.
		checkRoundTrip(t, c)
		if clone := c.Clone(); !cmp.Equal(c, clone, configOpts) {
			t.Fatalf("Clone differs: %s", cmp.Diff(c, clone, configOpts))
		}
	})
}

// FuzzParseKey checks that ParseKey never panics and accepts exactly the
// strings that are the canonical standard base64 of 32 bytes.
func FuzzParseKey(f *testing.F) {
	for _, s := range []string{privA, pubB, pskB, zero, "", "=", privA[:43], privA + "=", privA[:42] + "==", privA[:42] + "l="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			if k != (Key{}) {
				t.Fatalf("ParseKey(%q) returned a key with error %v", s, err)
			}
			b, derr := base64.StdEncoding.DecodeString(s)
			if derr == nil && len(b) == KeyLen && Key(b).String() == s {
				t.Fatalf("ParseKey(%q) rejected a canonical key: %v", s, err)
			}
			return
		}
		if got := k.String(); got != s {
			t.Fatalf("ParseKey(%q).String() = %q", s, got)
		}
		var u Key
		if err := u.UnmarshalText([]byte(s)); err != nil || u != k {
			t.Fatalf("UnmarshalText(%q) = %v, %v; ParseKey gave %v", s, u, err, k)
		}
	})
}
