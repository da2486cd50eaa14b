package netstack

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestDeviceCloseClosesNet closes Net.Device() directly, from under a Net
// with a listener, an open connection and a blocked Accept, and checks
// that the Net is closed as a whole: every operation fails with
// net.ErrClosed (before, dials failed with ErrNoRoute while Listen and
// Ping still worked), and Close reports it was closed already. The
// package's TestMain checks that no goroutine is left.
func TestDeviceCloseClosesNet(t *testing.T) {
	for _, closer := range []string{"device", "device-and-net-concurrently"} {
		t.Run(closer, func(t *testing.T) {
			a, b := openPair(t, nil)
			ctx := testContext(t, 20*time.Second)
			ln, err := a.Listen("tcp", ":9200")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err == nil {
					accepted <- c
				}
			}()
			c, err := b.DialContext(ctx, "tcp", netip.AddrPortFrom(addrA4, 9200).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sc := <-accepted
			defer sc.Close()
			acceptErr := make(chan error, 1)
			go func() {
				_, err := ln.Accept()
				acceptErr <- err
			}()
			readErr := make(chan error, 1)
			go func() {
				_, err := sc.Read(make([]byte, 1))
				readErr <- err
			}()

			if closer == "device" {
				if err := a.Device().Close(); err != nil {
					t.Fatalf("Device().Close: %v", err)
				}
			} else {
				var wg sync.WaitGroup
				wg.Go(func() { a.Device().Close() })
				err := a.Close()
				wg.Wait()
				// Either may have won; the Net is closed once both return.
				if err != nil && !errors.Is(err, net.ErrClosed) {
					t.Errorf("Close racing Device().Close = %v, want nil or net.ErrClosed", err)
				}
			}

			checks := []struct {
				name string
				err  error
			}{
				{"blocked Accept", waitErr(t, acceptErr)},
				{"blocked Read", waitErr(t, readErr)},
				{"Listen", errOf(a.Listen("tcp", ":9201"))},
				{"ListenPacket", errOf(a.ListenPacket("udp", ":9201"))},
				{"Dial tcp", errOf(a.DialContext(ctx, "tcp", netip.AddrPortFrom(addrB4, 80).String()))},
				{"Dial udp", errOf(a.DialContext(ctx, "udp", netip.AddrPortFrom(addrB4, 53).String()))},
				{"Ping", errOf(a.Ping(ctx, addrB4))},
				{"Ping own address", errOf(a.Ping(ctx, addrA4))},
			}
			for _, c := range checks {
				if !errors.Is(c.err, net.ErrClosed) {
					t.Errorf("%s after Device().Close: %v, want net.ErrClosed", c.name, c.err)
				}
			}
			if err := a.Close(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Close after the device was closed = %v, want net.ErrClosed", err)
			}
		})
	}
}

func errOf[T any](_ T, err error) error { return err }

func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Error("still blocked 10s after the device was closed")
		return nil
	}
}
