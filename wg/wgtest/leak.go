package wgtest

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakGrace is how long the leak check waits for goroutines that are
// still winding down after Close returned, on a slow machine.
const leakGrace = 3 * time.Second

// leakCheck records the goroutines running now and returns a function that
// reports, through t, any goroutine started since that is still running
// after grace.
//
// The check cannot tell whose goroutines it sees: goroutines of tests that
// run in parallel (t.Parallel) and start after the snapshot are reported
// too. Parallel tests should switch the check off in the options and use
// goleak.VerifyTestMain instead.
func leakCheck(t testing.TB, grace time.Duration) func() {
	snapshot := goleak.IgnoreCurrent()
	return func() {
		t.Helper()
		deadline := time.Now().Add(grace)
		for {
			// Each Find retries for about half a second itself.
			err := goleak.Find(snapshot)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("wgtest: goroutines leaked: %v", err)
				return
			}
		}
	}
}
