package netstack_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg/wgtest"
)

// TestRACKCrawl is a diagnostic, not a check: it runs WGKIT_RACK_CRAWL
// partitions of 3 s under a bulk stream with the tunings of
// WGKIT_RECOVERY_TUNINGS (default "rack"), taking turns, and for each
// trial logs how soon the stream was back at half its rate; for a trial
// that was not back within a second it logs the sender's TCP state every
// 100 ms from the heal on (congestion state and window, RTO, RTT, the
// endpoint's retransmission counters), which is what BENCHMARKS.md's
// account of RACK's crawl after an outage is read from:
//
//	WGKIT_RACK_CRAWL=10 WGKIT_RECOVERY_TUNINGS=rack,default go test -run TestRACKCrawl -v ./netstack/
func TestRACKCrawl(t *testing.T) {
	var n int
	if s := os.Getenv("WGKIT_RACK_CRAWL"); s == "" {
		t.Skip("a diagnostic of minutes; set WGKIT_RACK_CRAWL=N to run N trials")
	} else if _, err := fmt.Sscan(s, &n); err != nil || n < 1 {
		t.Fatalf("WGKIT_RACK_CRAWL=%q: want a count", s)
	}
	tunings := []tuning{mustTuning(t, "rack")}
	if os.Getenv("WGKIT_RECOVERY_TUNINGS") != "" {
		tunings = sweepTunings(t)
	}
	for i := range n {
		for _, tu := range tunings {
			t.Run(fmt.Sprintf("%s/%d", tu.name, i), func(t *testing.T) { crawlTrial(t, tu, uint64(i+1)) })
		}
	}
}

func mustTuning(t *testing.T, name string) tuning {
	t.Helper()
	tu, err := namedTuning(name)
	if err != nil {
		t.Fatal(err)
	}
	return tu
}

func crawlTrial(t *testing.T, tu tuning, seed uint64) {
	nw := wgtest.NewNetwork(t, 2, &wgtest.NetworkOptions{Seed: seed})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := nw.Peer(0), nw.Peer(1)
	tu.apply(t, a.Net(), b.Net())
	s := startBulk(t, ctx, a.Net(), b.Net(), b.Addr(), 9500)
	defer s.stop()
	time.Sleep(500 * time.Millisecond)
	before := s.rate(time.Second)
	var lines []string
	last := s.got.Load()
	sample := func(tag string) {
		now := s.got.Load()
		lines = append(lines, fmt.Sprintf("%s %8.3f MiB/s %s", tag, float64(now-last)*10/(1<<20), netstack.TCPConnInfo(s.conn)))
		last = now
	}
	sample("before")
	nw.Partition(0, 1)
	for i := range 30 {
		time.Sleep(100 * time.Millisecond)
		if i%10 == 9 {
			sample(fmt.Sprintf("out+%.1fs", float64(i+1)/10))
		}
	}
	nw.Heal(0, 1)
	healed := s.got.Load()
	back := time.Duration(-1)
	marks := []int64{healed}
	for i := range 50 {
		time.Sleep(100 * time.Millisecond)
		sample(fmt.Sprintf("heal+%.1fs", float64(i+1)/10))
		marks = append(marks, last)
		if j := len(marks) - 1; back < 0 && j >= 5 && float64(marks[j]-marks[j-5])*2 >= before/2 {
			back = time.Duration(j-5) * 100 * time.Millisecond
		}
	}
	t.Logf("CRAWL tuning=%s seed=%d before=%s back-at-half=%v mean-5s=%s", tu.name, seed, mib(before), back, mib(float64(s.got.Load()-healed)/5))
	if back < 0 || back > time.Second {
		t.Logf("sender state:\n%s", strings.Join(lines, "\n"))
	}
}
