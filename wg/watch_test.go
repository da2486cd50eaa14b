package wg

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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

// TestRekeyLoggedAtDebug: the first handshake is logged at Info, a rekey
// of a current session at Debug, and the first after a failed attempt at
// Info again.
func TestRekeyLoggedAtDebug(t *testing.T) {
	q := newEventQueue(slog.New(slog.DiscardHandler), nil)
	w := newWatcher(&Device{log: slog.New(slog.DiscardHandler)}, q, defaultWatchTiming())
	p := &peerWatch{}
	t0 := time.Now().Add(-time.Hour)
	hs := func(at time.Time) {
		w.updateLocked(Key{1}, p, &PeerStatus{LastHandshake: at}, at)
	}
	hs(t0)
	hs(t0.Add(2 * time.Minute))
	p.attempts = 1
	hs(t0.Add(4 * time.Minute))
	hs(t0.Add(10 * time.Minute)) // after an idle spell
	rec := newRecorder()
	var got []string
	for _, ev := range q.q {
		if ev.Kind == EventHandshakeCompleted {
			logEvent(rec.logger(), ev)
		}
	}
	for _, r := range rec.recs {
		got = append(got, r.Level.String())
	}
	want := []string{"INFO", "DEBUG", "INFO", "INFO"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("handshake log levels (-want +got):\n%s", diff)
	}
}
