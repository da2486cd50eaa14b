package netstack

import (
	"context"
	"testing"

	"github.com/wgkit/wgkit/internal/memnet"
)

// TestOpenUAPIDirWithoutEnable checks that a UAPIDir without EnableUAPI
// is refused rather than silently serving nothing (before EnableUAPI, a
// UAPIDir alone switched the socket on).
func TestOpenUAPIDirWithoutEnable(t *testing.T) {
	cfg, _ := pairConfigs(t, "", "")
	sw := memnet.NewSwitch(nil)
	defer sw.Close()
	ep, err := sw.NewAddr()
	if err != nil {
		t.Fatal(err)
	}
	bind := &closeCountingBind{Bind: sw.NewBind(1, ep)}
	n, err := Open(context.Background(), cfg, &Options{Bind: bind, UAPIDir: t.TempDir()})
	if err == nil {
		n.Close()
		t.Fatal("Open with UAPIDir and no EnableUAPI succeeded")
	}
	if want := "netstack: open: UAPIDir set without EnableUAPI"; err.Error() != want {
		t.Errorf("Open error = %q, want %q", err, want)
	}
	if bind.closes.Load() == 0 {
		t.Error("the Bind was not closed after the failed Open")
	}
}
