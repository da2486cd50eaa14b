package wg

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"

	"golang.org/x/crypto/curve25519"
)

// KeyLen is the length in bytes of a WireGuard key.
const KeyLen = 32

// Key is a Curve25519 private or public key, or a symmetric preshared key,
// as WireGuard uses them. The zero Key means "no key".
//
// Key is a value type: copying it copies the key material.
type Key [KeyLen]byte

// GeneratePrivateKey returns a new random private key, clamped for Curve25519
// as wg(8) genkey does.
func GeneratePrivateKey() (Key, error) {
	k, err := GeneratePresharedKey()
	if err != nil {
		return Key{}, err
	}
	k.clamp()
	return k, nil
}

// GeneratePresharedKey returns 32 random bytes from crypto/rand, as wg(8) genpsk does.
func GeneratePresharedKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("wg: generate key: %w", err)
	}
	return k, nil
}

// clamp applies the Curve25519 private key clamping from RFC 7748.
func (k *Key) clamp() {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// ErrInvalidKey is wrapped by the errors ParseKey and UnmarshalText return
// for a string that is not a base64-encoded 32-byte key.
var ErrInvalidKey = errors.New("invalid key")

// ParseKey parses a key in the base64 form that wg(8) prints: 44 characters
// of standard base64 with one '=' of padding.
func ParseKey(s string) (Key, error) {
	var k Key
	if len(s) != base64.StdEncoding.EncodedLen(KeyLen) {
		return Key{}, fmt.Errorf("wg: %w: want %d base64 characters, got %d", ErrInvalidKey, base64.StdEncoding.EncodedLen(KeyLen), len(s))
	}
	if s[len(s)-1] != '=' || s[len(s)-2] == '=' {
		return Key{}, fmt.Errorf("wg: %w: want exactly one '=' of padding at the end", ErrInvalidKey)
	}
	// Strict rejects non-zero trailing bits, as wg(8) does.
	n, err := base64.StdEncoding.Strict().Decode(k[:], []byte(s))
	if err != nil {
		return Key{}, fmt.Errorf("wg: %w: %v", ErrInvalidKey, err)
	}
	if n != KeyLen {
		return Key{}, fmt.Errorf("wg: %w: decoded %d bytes, want %d", ErrInvalidKey, n, KeyLen)
	}
	return k, nil
}

// PublicKey returns the Curve25519 public key of the private key k.
// The key is clamped first, so an unclamped private key gives the same
// public key as wg(8) pubkey does.
func (k Key) PublicKey() Key {
	priv := k
	priv.clamp()
	// X25519 with the base point fails only for a low-order input point,
	// which the base point is not.
	out, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		panic("wg: X25519 with the base point failed: " + err.Error())
	}
	return Key(out)
}

// String returns the key in base64, as wg(8) prints it.
func (k Key) String() string {
	return base64.StdEncoding.EncodeToString(k[:])
}

// IsZero reports whether k is the zero Key (no key).
func (k Key) IsZero() bool {
	return k == Key{}
}

// MarshalText implements encoding.TextMarshaler with the base64 form.
func (k Key) MarshalText() ([]byte, error) {
	b := make([]byte, base64.StdEncoding.EncodedLen(KeyLen))
	base64.StdEncoding.Encode(b, k[:])
	return b, nil
}

// UnmarshalText implements encoding.TextUnmarshaler with the rules of ParseKey.
func (k *Key) UnmarshalText(text []byte) error {
	parsed, err := ParseKey(string(text))
	if err != nil {
		return err
	}
	*k = parsed
	return nil
}
