//go:build !windows

package wgnt

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/wgkit/wgkit/internal/engine"
)

var _ engine.Engine = (*Device)(nil)

// TestStub checks that every call says there is no WireGuardNT here and
// names the platform.
func TestStub(t *testing.T) {
	if Available() {
		t.Error("Available on " + runtime.GOOS)
	}
	d, err := Create("wgkit0", nil)
	if d != nil || !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Create = %v, %v; want nil and errors.ErrUnsupported", d, err)
	}
	if want := runtime.GOOS + "/" + runtime.GOARCH; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %s", err, want)
	}
	var stub Device
	for name, err := range map[string]error{"Up": stub.Up(), "Configure": stub.Configure(&engine.Config{}), "Close": stub.Close()} {
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("%s = %v, want errors.ErrUnsupported", name, err)
		}
	}
	if _, err := stub.State(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("State = %v, want errors.ErrUnsupported", err)
	}
}
