package memnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/conn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair opens two binds, nodes 0 and 1, on a new switch.
func openPair(t *testing.T, opts *Options) (*Switch, [2]*Bind, [2]conn.ReceiveFunc) {
	t.Helper()
	s := NewSwitch(opts)
	t.Cleanup(func() { s.Close() })
	var binds [2]*Bind
	var fns [2]conn.ReceiveFunc
	for i := range binds {
		addr, err := s.NewAddr()
		if err != nil {
			t.Fatal(err)
		}
		binds[i] = s.NewBind(i, addr)
		f, _, err := binds[i].Open(0)
		if err != nil {
			t.Fatal(err)
		}
		if len(f) != 1 {
			t.Fatalf("Open returned %d receive functions, want 1", len(f))
		}
		fns[i] = f[0]
	}
	return s, binds, fns
}

// recvAll receives until nothing arrived for quiet, at most 10000 datagrams.
func recvAll(t *testing.T, b *Bind, fn conn.ReceiveFunc, quiet time.Duration) []string {
	t.Helper()
	type res struct {
		s   string
		err error
	}
	ch := make(chan res)
	stop := make(chan struct{})
	go func() {
		bufs := [][]byte{make([]byte, 2000)}
		sizes := []int{0}
		eps := []conn.Endpoint{nil}
		for {
			n, err := fn(bufs, sizes, eps)
			var r res
			if err != nil {
				r.err = err
			} else if n == 1 {
				r.s = string(bufs[0][:sizes[0]])
			}
			select {
			case ch <- r:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var got []string
	defer func() {
		close(stop)
		b.Close() // unblocks the receiver
	}()
	for range 10000 {
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("receive: %v", r.err)
			}
			got = append(got, r.s)
		case <-time.After(quiet):
			return got
		}
	}
	return got
}

func send(t *testing.T, b *Bind, to netip.AddrPort, msgs ...string) {
	t.Helper()
	ep, err := b.ParseEndpoint(to.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := b.Send([][]byte{[]byte(m)}, ep); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
}

func msgs(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprint(i))
	}
	return out
}

func TestDeliverInOrder(t *testing.T) {
	_, b, fns := openPair(t, nil)
	want := msgs(100)
	send(t, b[0], b[1].Addr(), want...)
	got := recvAll(t, b[1], fns[1], 50*time.Millisecond)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
}

func TestSourceEndpoint(t *testing.T) {
	_, b, fns := openPair(t, nil)
	send(t, b[0], b[1].Addr(), "x")
	bufs := [][]byte{make([]byte, 10)}
	sizes := []int{0}
	eps := []conn.Endpoint{nil}
	if _, err := fns[1](bufs, sizes, eps); err != nil {
		t.Fatal(err)
	}
	if got, want := eps[0].DstToString(), b[0].Addr().String(); got != want {
		t.Errorf("source endpoint = %s, want %s", got, want)
	}
}

func TestFaults(t *testing.T) {
	const n = 2000
	tests := []struct {
		name   string
		faults Faults
		check  func(t *testing.T, got []string, st Stats)
	}{
		{
			name:   "loss",
			faults: Faults{Loss: 0.2},
			check: func(t *testing.T, got []string, st Stats) {
				// Binomial(2000, 0.2): mean 400, sd ~18.
				if st.Lost < 300 || st.Lost > 500 || len(got) != n-int(st.Lost) {
					t.Errorf("lost %d of %d, received %d", st.Lost, n, len(got))
				}
			},
		},
		{
			name:   "mtu",
			faults: Faults{MTU: 3},
			check: func(t *testing.T, got []string, st Stats) {
				// msgs 0..999 have at most 3 bytes; 1000..1999 have 4.
				if diff := cmp.Diff(msgs(1000), got); diff != "" {
					t.Errorf("received (-want +got):\n%s", diff)
				}
				if st.TooBig != 1000 {
					t.Errorf("TooBig = %d, want 1000", st.TooBig)
				}
			},
		},
		{
			name:   "duplicate",
			faults: Faults{Duplicate: 0.5},
			check: func(t *testing.T, got []string, st Stats) {
				if st.Duplicated < 800 || st.Duplicated > 1200 || len(got) != n+int(st.Duplicated) {
					t.Errorf("duplicated %d of %d, received %d", st.Duplicated, n, len(got))
				}
			},
		},
		{
			name:   "reorder",
			faults: Faults{Reorder: 0.1, ReorderDelay: 20 * time.Millisecond},
			check: func(t *testing.T, got []string, st Stats) {
				if len(got) != n {
					t.Fatalf("received %d, want %d", len(got), n)
				}
				inversions := 0
				seen := map[string]bool{}
				prev := -1
				for _, m := range got {
					seen[m] = true
					var v int
					fmt.Sscan(m, &v)
					if v < prev {
						inversions++
					}
					prev = v
				}
				if len(seen) != n || inversions == 0 || st.Reordered == 0 {
					t.Errorf("distinct %d, inversions %d, Reordered %d", len(seen), inversions, st.Reordered)
				}
			},
		},
		{
			name:   "delay",
			faults: Faults{Delay: 30 * time.Millisecond, Jitter: 5 * time.Millisecond},
			check: func(t *testing.T, got []string, st Stats) {
				if len(got) != n || st.Delayed != n {
					t.Errorf("received %d, delayed %d, want %d", len(got), st.Delayed, n)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, b, fns := openPair(t, &Options{Seed: 1, QueueLen: 3 * n})
			if err := s.SetFaults(tt.faults); err != nil {
				t.Fatal(err)
			}
			send(t, b[0], b[1].Addr(), msgs(n)...)
			got := recvAll(t, b[1], fns[1], 200*time.Millisecond)
			tt.check(t, got, s.Stats())
		})
	}
}

func TestSeedReproducible(t *testing.T) {
	run := func(seed uint64) []string {
		s, b, fns := openPair(t, &Options{Seed: seed, QueueLen: 1000})
		if err := s.SetFaults(Faults{Loss: 0.3}); err != nil {
			t.Fatal(err)
		}
		send(t, b[0], b[1].Addr(), msgs(500)...)
		return recvAll(t, b[1], fns[1], 50*time.Millisecond)
	}
	a, b, c := run(7), run(7), run(8)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("same seed, different drops (-first +second):\n%s", diff)
	}
	if cmp.Equal(a, c) {
		t.Errorf("seeds 7 and 8 dropped the same datagrams")
	}
}

func TestPartitionHeal(t *testing.T) {
	s, b, fns := openPair(t, nil)
	s.Partition(1, 0)
	send(t, b[0], b[1].Addr(), "lost")
	s.Heal(0, 1)
	send(t, b[0], b[1].Addr(), "kept")
	got := recvAll(t, b[1], fns[1], 50*time.Millisecond)
	if diff := cmp.Diff([]string{"kept"}, got); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
	if st := s.Stats(); st.Partitioned != 1 {
		t.Errorf("Partitioned = %d, want 1", st.Partitioned)
	}
}

func TestMove(t *testing.T) {
	s, b, fns := openPair(t, nil)
	old := b[1].Addr()
	addr, err := s.NewAddr()
	if err != nil {
		t.Fatal(err)
	}
	if err := b[1].Move(addr); err != nil {
		t.Fatal(err)
	}
	if err := b[0].Move(addr); err == nil {
		t.Errorf("Move to an address in use succeeded")
	}
	send(t, b[0], old, "to old")
	send(t, b[0], addr, "to new")
	got := recvAll(t, b[1], fns[1], 50*time.Millisecond)
	if diff := cmp.Diff([]string{"to new"}, got); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
}

func TestCloseAndReopen(t *testing.T) {
	s, b, fns := openPair(t, nil)
	errc := make(chan error, 1)
	go func() {
		_, err := fns[1]([][]byte{make([]byte, 10)}, []int{0}, []conn.Endpoint{nil})
		errc <- err
	}()
	if err := b[1].Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("receive after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("receive did not return after Close")
	}
	if err := b[1].Close(); err != nil {
		t.Errorf("second Bind.Close: %v", err)
	}
	if err := b[1].Send([][]byte{[]byte("x")}, &Endpoint{addr: b[0].Addr()}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close: %v, want net.ErrClosed", err)
	}
	f, _, err := b[1].Open(0)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if _, _, err := b[1].Open(0); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Errorf("second Open: %v, want ErrBindAlreadyOpen", err)
	}
	send(t, b[0], b[1].Addr(), "again")
	if got := recvAll(t, b[1], f[0], 50*time.Millisecond); !cmp.Equal(got, []string{"again"}) {
		t.Errorf("after reopen received %q", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Switch.Close: %v, want net.ErrClosed", err)
	}
}

func TestSetFaultsValidates(t *testing.T) {
	s := NewSwitch(nil)
	defer s.Close()
	for _, f := range []Faults{{Loss: 1.5}, {Reorder: -0.1}, {Delay: -1}, {MTU: -1}} {
		if err := s.SetFaults(f); err == nil {
			t.Errorf("SetFaults(%+v) succeeded", f)
		}
	}
}

func TestLinkFaults(t *testing.T) {
	s, b, fns := openPair(t, nil)
	if err := s.SetLinkFaults(0, 1, &Faults{Loss: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLinkFaults(0, 1, &Faults{Loss: 2}); err == nil {
		t.Errorf("SetLinkFaults with loss 2 succeeded")
	}
	send(t, b[0], b[1].Addr(), "lost")
	send(t, b[1], b[0].Addr(), "back")
	if err := s.SetLinkFaults(0, 1, nil); err != nil {
		t.Fatal(err)
	}
	send(t, b[0], b[1].Addr(), "kept")
	got := recvAll(t, b[1], fns[1], 50*time.Millisecond)
	if diff := cmp.Diff([]string{"kept"}, got); diff != "" {
		t.Errorf("0 -> 1 received (-want +got):\n%s", diff)
	}
	got = recvAll(t, b[0], fns[0], 50*time.Millisecond)
	if diff := cmp.Diff([]string{"back"}, got); diff != "" {
		t.Errorf("1 -> 0 received (-want +got):\n%s", diff)
	}
	if st := s.Stats(); st.Lost != 1 {
		t.Errorf("Lost = %d, want 1", st.Lost)
	}
}
