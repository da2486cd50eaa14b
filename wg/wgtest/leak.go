package wgtest

import (
	"testing"

	"go.uber.org/goleak"
)

// leakCheck records the goroutines running now and returns a function that
// reports, through t, any goroutine started since that is still running.
// goleak.Find retries for about two seconds, which covers goroutines that
// are still winding down after Close returned.
//
// The check cannot tell whose goroutines it sees: goroutines of tests that
// run in parallel (t.Parallel) and start after the snapshot are reported
// too. Parallel tests should switch the check off in the options and use
// goleak.VerifyTestMain instead.
func leakCheck(t testing.TB) func() {
	snapshot := goleak.IgnoreCurrent()
	return func() {
		t.Helper()
		if err := goleak.Find(snapshot); err != nil {
			t.Errorf("wgtest: goroutines leaked: %v", err)
		}
	}
}
