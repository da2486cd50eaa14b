package wg

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestNoKeysInLogsErrorsEvents runs a scenario with handshakes, traffic,
// roaming, a failing peer and refused calls, at Debug, and scans every log
// line, error and event for the private and preshared keys, in base64
// and hex. It also checks that traffic logs nothing at Info.
func TestNoKeysInLogsErrorsEvents(t *testing.T) {
	t.Parallel() // leak-checked by TestMain
	sw := newSwitch(t)
	psk, err := GeneratePresharedKey()
	if err != nil {
		t.Fatal(err)
	}
	a, b := newMemPair(t, sw, psk, nil)
	bk := b.key.PublicKey()
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.dev.WaitHandshake(ctx, bk); err != nil {
		t.Fatal(err)
	}
	if !a.ping(t, b, 5*time.Second) {
		t.Fatal("no ping")
	}
	a.rec.wait(t, 0, 5*time.Second, "handshake completed", is(EventHandshakeCompleted, bk))
	infoLines := func() int {
		a.rec.mu.Lock()
		defer a.rec.mu.Unlock()
		n := 0
		for _, r := range a.rec.recs {
			if r.Level >= slog.LevelInfo {
				n++
			}
		}
		return n
	}
	before := infoLines()
	for range 50 {
		if !a.ping(t, b, 5*time.Second) || !b.ping(t, a, 5*time.Second) {
			t.Fatal("ping lost")
		}
	}
	if got := infoLines() - before; got != 0 {
		t.Errorf("100 packets logged %d lines at Info or above, want 0", got)
	}

	// Roam, a peer that never answers, refused calls.
	addr, _ := sw.NewAddr()
	b.bind.Move(addr)
	b.ping(t, a, 5*time.Second)
	dead := newMemPeer(t, sw, 2, "10.7.0.3")
	if err := a.dev.SetPeer(dead.peerEntry(psk)); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	_, err = a.dev.WaitHandshake(short, dead.key.PublicKey())
	errs = append(errs, err)
	errs = append(errs,
		a.dev.SetPeer(Peer{PublicKey: a.key.PublicKey(), PresharedKey: psk}),         // own key
		a.dev.SetPeer(Peer{PublicKey: bk, PresharedKey: psk, Endpoint: "no-port"}),   // bad endpoint
		a.dev.Reconfigure(&Config{Interface: Interface{PrivateKey: a.key, MTU: -1}}), // invalid
	)
	a.rec.wait(t, 0, 10*time.Second, "failing", is(EventHandshakeFailing, dead.key.PublicKey()))
	a.dev.Close()
	b.dev.Close()
	errs = append(errs, a.dev.Close(), a.dev.SetPeer(b.peerEntry(psk)))

	var text strings.Builder
	for _, p := range []*memPeer{a, b} {
		p.rec.mu.Lock()
		text.Write(p.rec.logBuf.Bytes())
		for _, ev := range p.rec.evs {
			fmt.Fprintf(&text, "%+v %v\n", ev, ev.Err)
		}
		p.rec.mu.Unlock()
	}
	for _, err := range errs {
		if err == nil {
			t.Errorf("a refused call succeeded")
			continue
		}
		fmt.Fprintf(&text, "%v %+v\n", err, err)
	}
	all := text.String()
	if !strings.Contains(all, bk.String()) {
		t.Fatal("the scan found not even the public key: it reads nothing")
	}
	for name, k := range map[string]Key{"a's private key": a.key, "b's private key": b.key, "dead's private key": dead.key, "preshared key": psk} {
		for _, form := range []string{k.String(), hex.EncodeToString(k[:]), strings.ToUpper(hex.EncodeToString(k[:]))} {
			if strings.Contains(all, form) {
				t.Errorf("%s appears in a log line, error or event (%d bytes scanned)", name, len(all))
			}
		}
	}
}
