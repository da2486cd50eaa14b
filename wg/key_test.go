package wg

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mustGenerate(t *testing.T) Key {
	t.Helper()
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatalf("GeneratePrivateKey: %v", err)
	}
	return k
}

func mustHexKey(t *testing.T, s string) Key {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != KeyLen {
		t.Fatalf("bad test key %q", s)
	}
	return Key(b)
}

func TestParseKey(t *testing.T) {
	// 0x00 0x01 ... 0x1f, as wg(8) prints it.
	var seq Key
	for i := range seq {
		seq[i] = byte(i)
	}
	const seqB64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	tests := []struct {
		name    string
		in      string
		want    Key
		wantErr bool
	}{
		{name: "valid", in: seqB64, want: seq},
		{name: "zero", in: strings.Repeat("A", 43) + "=", want: Key{}},
		{name: "all ones", in: strings.Repeat("/", 42) + "8=", want: func() Key {
			var k Key
			for i := range k {
				k[i] = 0xff
			}
			return k
		}()},
		{name: "empty", in: "", wantErr: true},
		{name: "too short", in: seqB64[:43], wantErr: true},
		{name: "too long", in: seqB64 + "=", wantErr: true},
		{name: "48 bytes", in: strings.Repeat("A", 64), wantErr: true},
		{name: "missing padding", in: seqB64[:43] + "A", wantErr: true},
		{name: "extra padding", in: seqB64[:42] + "==", wantErr: true},
		{name: "url-safe alphabet", in: strings.Repeat("_", 42) + "w=", wantErr: true},
		{name: "bad character", in: "!" + seqB64[1:], wantErr: true},
		{name: "space inside", in: seqB64[:10] + " " + seqB64[11:], wantErr: true},
		{name: "leading space", in: " " + seqB64[:43], wantErr: true},
		{name: "newline", in: seqB64[:43] + "\n", wantErr: true},
		{name: "non-canonical trailing bits", in: seqB64[:42] + "9=", wantErr: true},
		{name: "non-canonical trailing bits low", in: strings.Repeat("A", 42) + "B=", wantErr: true},
		{name: "hex not base64", in: strings.Repeat("a", 64), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKey(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseKey(%q) = %v, want error", tt.in, got)
				}
				if !errors.Is(err, ErrInvalidKey) {
					t.Errorf("ParseKey(%q) error %v does not wrap ErrInvalidKey", tt.in, err)
				}
				if !strings.HasPrefix(err.Error(), "wg: ") {
					t.Errorf("ParseKey(%q) error %q lacks the \"wg: \" prefix", tt.in, err)
				}
				if got != (Key{}) {
					t.Errorf("ParseKey(%q) returned non-zero key with error", tt.in)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKey(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseKey(%q) (-want +got):\n%s", tt.in, diff)
			}
			if s := got.String(); s != tt.in {
				t.Errorf("String() = %q, want %q", s, tt.in)
			}
		})
	}
}

func TestKeyStringRoundTrip(t *testing.T) {
	for i := range 100 {
		k, err := GeneratePresharedKey()
		if err != nil {
			t.Fatal(err)
		}
		s := k.String()
		if len(s) != 44 || !strings.HasSuffix(s, "=") {
			t.Fatalf("key %d: String() = %q, want 44 characters ending in '='", i, s)
		}
		got, err := ParseKey(s)
		if err != nil {
			t.Fatalf("ParseKey(%q): %v", s, err)
		}
		if got != k {
			t.Fatalf("ParseKey(String()) = %x, want %x", got, k)
		}
	}
}

func TestKeyTextMarshaling(t *testing.T) {
	k := mustGenerate(t)
	text, err := k.MarshalText()
	if err != nil {
		t.Fatalf("MarshalText: %v", err)
	}
	if string(text) != k.String() {
		t.Errorf("MarshalText = %q, want String() %q", text, k.String())
	}
	var got Key
	if err := got.UnmarshalText(text); err != nil {
		t.Fatalf("UnmarshalText(%q): %v", text, err)
	}
	if got != k {
		t.Errorf("UnmarshalText(MarshalText()) = %v, want %v", got, k)
	}

	// A failed UnmarshalText leaves the key as it was.
	before := got
	if err := got.UnmarshalText([]byte("not a key")); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("UnmarshalText(bad) error = %v, want ErrInvalidKey", err)
	}
	if got != before {
		t.Errorf("failed UnmarshalText changed the key to %v", got)
	}
}

func TestKeyIsZero(t *testing.T) {
	if !(Key{}).IsZero() {
		t.Error("Key{}.IsZero() = false")
	}
	for i := range KeyLen {
		var k Key
		k[i] = 1
		if k.IsZero() {
			t.Errorf("key with byte %d set: IsZero() = true", i)
		}
	}
}

func TestGeneratePrivateKeyClamped(t *testing.T) {
	for range 100 {
		k := mustGenerate(t)
		if k[0]&7 != 0 || k[31]&0x80 != 0 || k[31]&0x40 == 0 {
			t.Fatalf("GeneratePrivateKey() = %x, not clamped (RFC 7748)", k)
		}
		if k.PublicKey().IsZero() {
			t.Fatalf("PublicKey() of %v is zero", k)
		}
	}
}

func TestGeneratePresharedKeyDistinct(t *testing.T) {
	const n = 100
	seen := make(map[Key]bool, n)
	for range n {
		k, err := GeneratePresharedKey()
		if err != nil {
			t.Fatal(err)
		}
		if k.IsZero() {
			t.Fatal("GeneratePresharedKey() returned the zero key")
		}
		if seen[k] {
			t.Fatalf("GeneratePresharedKey() returned %v twice", k)
		}
		seen[k] = true
	}
}

func TestPublicKeyRFC7748(t *testing.T) {
	// RFC 7748 section 6.1: Alice's and Bob's key pairs.
	tests := []struct{ name, priv, pub string }{
		{"alice", "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"},
		{"bob", "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb", "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mustHexKey(t, tt.priv).PublicKey()
			if want := mustHexKey(t, tt.pub); got != want {
				t.Errorf("PublicKey() = %x, want %x", got, want)
			}
		})
	}
}

// TestPublicKeyMatchesWG compares PublicKey with wg(8) pubkey from
// wireguard-tools for 200 random keys, half of them not clamped (both
// clamp before multiplying).
func TestPublicKeyMatchesWG(t *testing.T) {
	wgPath, err := exec.LookPath("wg")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("wg(8) from wireguard-tools not installed, and CI is set: install wireguard-tools")
		}
		t.Skip("wg(8) from wireguard-tools not installed")
	}
	shPath, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to run wg(8) pubkey in a loop")
	}
	const n = 200
	keys := make([]Key, n)
	var in bytes.Buffer
	for i := range keys {
		k, err := GeneratePresharedKey()
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			k.clamp()
		}
		keys[i] = k
		in.WriteString(k.String() + "\n")
	}

	// One shell runs wg pubkey once per key: one process start for Go,
	// and each wg sees exactly one key as it expects.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, shPath, "-c", `while read -r k; do printf '%s\n' "$k" | "$1" pubkey || exit 1; done`, "sh", wgPath)
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("wg pubkey: %v: %s", err, stderr.Bytes())
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != n {
		t.Fatalf("wg pubkey printed %d lines, want %d", len(lines), n)
	}
	for i, k := range keys {
		if got, want := k.PublicKey().String(), lines[i]; got != want {
			t.Errorf("key %d %v: PublicKey() = %s, wg pubkey = %s", i, k, got, want)
		}
	}
}
