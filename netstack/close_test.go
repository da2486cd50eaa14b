package netstack

import (
	"errors"
	"net"
	"sync"
	"testing"
)

// TestListenerConcurrentClose checks that of several concurrent Close
// calls on one listener exactly one succeeds and the others report
// net.ErrClosed, as the net package's listeners do.
func TestListenerConcurrentClose(t *testing.T) {
	a, _ := openPair(t, nil)
	const listeners, closers = 20, 8
	for i := range listeners {
		l, err := a.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make([]error, closers)
		)
		for j := range closers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[j] = l.Close()
			}()
		}
		close(start)
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, net.ErrClosed):
				t.Errorf("listener %d: Close = %v, want nil or net.ErrClosed", i, err)
			}
		}
		if ok != 1 {
			t.Fatalf("listener %d: %d of %d concurrent Close calls returned nil, want 1", i, ok, closers)
		}
	}
}
