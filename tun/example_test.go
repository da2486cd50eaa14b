package tun_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/wgkit/wgkit/tun"
	"github.com/wgkit/wgkit/wg"
)

// Bring up wg0 from a wg-quick file until interrupted, as `wg-quick up`
// and `wg-quick down` would. (Not run: it needs root.)
func ExampleOpen() {
	f, err := os.Open("/etc/wireguard/wg0.conf")
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := wg.ParseConfig(f)
	f.Close()
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ifc, err := tun.Open(ctx, cfg, &tun.Options{Name: "wg0"})
	if err != nil {
		log.Fatal(err)
	}
	defer ifc.Close()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt)
	<-stop
	for _, p := range ifc.Device().Peers() {
		log.Printf("peer %s: last handshake %v, %d bytes in, %d out", p.PublicKey, p.LastHandshake, p.RxBytes, p.TxBytes)
	}
}
