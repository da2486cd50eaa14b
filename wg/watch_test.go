package wg

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"
)

// TestQuietRule: the watcher starts a handshake for a peer it sends data
// to without hearing back, but not for its own initiations to a peer that
// is gone (which would otherwise go on for ever), nor while an
// initiation is under way.
func TestQuietRule(t *testing.T) {
	ep := netip.MustParseAddrPort("198.18.0.9:51820")
	now := time.Now()
	for _, tc := range []struct {
		name      string
		lastRx    time.Duration // before now; 0: never
		initiated time.Duration // before now; 0: never
		inits     uint64        // initiations since the last poll
		tx, rx    uint64        // growth since the last poll
		want      bool
	}{
		{name: "data, silent peer", lastRx: 2 * time.Second, tx: 100, want: true},
		{name: "data, never heard", tx: 100, want: true},
		{name: "data, peer answers", lastRx: 2 * time.Second, tx: 100, rx: 32},
		{name: "data, heard just now", lastRx: 100 * time.Millisecond, tx: 100},
		{name: "only our initiations", lastRx: time.Minute, inits: 2, tx: 2 * 148},
		{name: "initiation and data", lastRx: time.Minute, initiated: 10 * time.Second, inits: 1, tx: 148 + 96, want: true},
		{name: "initiation under way", lastRx: time.Minute, initiated: 2 * time.Second, tx: 96},
		{name: "nothing sent", lastRx: time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWatcher(&Device{log: slog.New(slog.DiscardHandler)}, newEventQueue(slog.New(slog.DiscardHandler), nil), defaultWatchTiming())
			p := &peerWatch{endpoint: ep, rx: 1000, tx: 1000, nInitiations: 5 + tc.inits, initsAtPoll: 5}
			if tc.lastRx != 0 {
				p.lastRx = now.Add(-tc.lastRx)
			}
			if tc.initiated != 0 {
				p.initiated = now.Add(-tc.initiated)
			}
			ps := &PeerStatus{Endpoint: ep, RxBytes: 1000 + tc.rx, TxBytes: 1000 + tc.tx}
			if got := w.updateLocked(Key{1}, p, ps, now); got != tc.want {
				t.Errorf("handshake needed = %v, want %v", got, tc.want)
			}
		})
	}
}
