//go:build !linux && !windows

package tun

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/wgkit/wgkit/wg"
)

func TestOpenUnsupported(t *testing.T) {
	k, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), &wg.Config{Interface: wg.Interface{PrivateKey: k}}, nil)
	if err == nil || !strings.Contains(err.Error(), runtime.GOOS+"/"+runtime.GOARCH) {
		t.Errorf("Open = %v, want an error naming %s/%s", err, runtime.GOOS, runtime.GOARCH)
	}
}
