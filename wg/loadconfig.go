package wg

import (
	"errors"
	"fmt"
	"os"
)

// LoadConfig reads the wg-quick(8) file at path, as ParseConfig does.
// Errors name the file: one that cannot be opened or read wraps the
// *os.PathError (so errors.Is(err, os.ErrNotExist) holds for a missing
// file), and one in the text reads
// `wg: load config /etc/wireguard/wg0.conf line 7: unknown key "Foo" in [Interface]`
// and still unwraps to the [*ConfigError] with the line.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wg: load config: %w", err)
	}
	defer f.Close()
	cfg, err := ParseConfig(f)
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			return nil, &fileConfigError{path: path, ce: ce}
		}
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("wg: load config: %w", pe) // names the file
		}
		// ParseConfig's own "wg: parse config: " prefix gives way to ours.
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return nil, fmt.Errorf("wg: load config %s: %w", path, err)
	}
	return cfg, nil
}

// fileConfigError is a *ConfigError with the file it came from.
type fileConfigError struct {
	path string
	ce   *ConfigError
}

func (e *fileConfigError) Error() string {
	return fmt.Sprintf("wg: load config %s line %d: %v", e.path, e.ce.Line, e.ce.Err)
}

func (e *fileConfigError) Unwrap() error { return e.ce }
