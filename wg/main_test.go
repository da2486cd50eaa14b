package wg

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks, after all tests, that no goroutine outlives them; it
// covers the parallel tests, which cannot check one by one (checkLeaks)
// while others run.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
