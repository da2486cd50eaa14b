package netstack

import (
	"testing"
	"time"
)

// TestDeadline checks the deadline behind tcpConn's Set*Deadline: the
// channel a pending call waits on closes when the current deadline
// passes, and only then, however the deadline moved meanwhile.
func TestDeadline(t *testing.T) {
	const never = time.Hour
	tests := []struct {
		name       string
		set        []time.Duration // from now, in order; 0: no deadline
		wantClosed bool
	}{
		{name: "none", set: nil, wantClosed: false},
		{name: "past", set: []time.Duration{-time.Second}, wantClosed: true},
		{name: "soon", set: []time.Duration{time.Millisecond}, wantClosed: true},
		{name: "moved later", set: []time.Duration{time.Millisecond, never}, wantClosed: false},
		{name: "moved sooner", set: []time.Duration{never, time.Millisecond}, wantClosed: true},
		{name: "cleared", set: []time.Duration{time.Millisecond, 0}, wantClosed: false},
		{name: "past then cleared", set: []time.Duration{-time.Second, 0}, wantClosed: false},
		{name: "past then future", set: []time.Duration{-time.Second, never}, wantClosed: false},
		{name: "past twice", set: []time.Duration{-time.Second, -time.Second}, wantClosed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d deadline
			d.init()
			defer d.stop()
			for _, s := range tt.set {
				at := time.Time{}
				if s != 0 {
					at = time.Now().Add(s)
				}
				d.set(at)
			}
			ch := d.channel()
			if tt.wantClosed {
				select {
				case <-ch:
				case <-time.After(10 * time.Second):
					t.Fatal("the deadline's channel did not close")
				}
				return
			}
			// Long enough for a millisecond timer set before to have fired.
			time.Sleep(50 * time.Millisecond)
			if closed(ch) {
				t.Error("the deadline's channel closed, want open")
			}
		})
	}
}
