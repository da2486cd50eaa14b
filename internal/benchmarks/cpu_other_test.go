//go:build !unix

package benchmarks

import (
	"testing"
	"time"
)

// cpuTime is not measured here: getrusage is a Unix call. The cpu-s/GB
// metric is then left out.
func cpuTime(testing.TB) time.Duration { return 0 }
