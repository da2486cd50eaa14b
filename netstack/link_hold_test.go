package netstack

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestDeliverWaitsForStart checks the hold Open puts on the link while it
// builds the stack after the engine: a packet the engine delivers before
// start waits, reaches the stack at start, and fails at close.
func TestDeliverWaitsForStart(t *testing.T) {
	type result struct {
		n   int
		err error
	}
	for _, tt := range []struct {
		name    string
		release func(e *endpoint)
		want    result
		wantLen int // packets the stack got
	}{
		{"start", (*endpoint).start, result{n: 1}, 1},
		{"close", func(e *endpoint) { e.closeQueue() }, result{err: os.ErrClosed}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEndpoint(1420)
			defer e.closeQueue()
			e.hold()
			var d recordingDispatcher
			e.Attach(&d)
			pkt := echoRequest(t, linkLocal4, linkPeer4, 1, 0)
			done := make(chan result, 1)
			go func() {
				n, err := e.deliverBatch([][]byte{pkt}, 0)
				done <- result{n, err}
			}()
			select {
			case r := <-done:
				t.Fatalf("deliverBatch returned %d, %v before start", r.n, r.err)
			case <-time.After(50 * time.Millisecond):
			}
			tt.release(e)
			var got result
			select {
			case got = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("deliverBatch still waiting after release")
			}
			if got.n != tt.want.n || !errors.Is(got.err, tt.want.err) || (tt.want.err == nil) != (got.err == nil) {
				t.Errorf("deliverBatch = %d, %v; want %d, %v", got.n, got.err, tt.want.n, tt.want.err)
			}
			if diff := cmp.Diff(tt.wantLen, len(d.sizes)); diff != "" {
				t.Errorf("packets delivered to the stack (-want +got):\n%s", diff)
			}
		})
	}
}
