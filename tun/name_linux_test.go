//go:build linux

package tun

import "testing"

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"wg0", true},
		{"a", true},
		{"exactly15bytes_", true},
		{"sixteen_bytes_xx", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"a:b", false},
		{"a b", false},
		{"a\tb", false},
		{"", false},
		{"wg\x00x", false},
		{"wg\xa0x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkName(tt.name); (err == nil) != tt.ok {
				t.Errorf("checkName(%q) = %v, want ok %v", tt.name, err, tt.ok)
			}
		})
	}
}
