package benchmarks

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/wgkit/wgkit/wg"
)

// stockTunnel is wireguard-go's own tun/netstack with its engine, glued
// together the way its examples do, with UAPI text written by hand.
type stockTunnel struct {
	dev  *device.Device
	tnet *netstack.Net
}

func openStock(tb testing.TB, cfg *wg.Config) tunnel {
	tb.Helper()
	return openStockOn(tb, cfg, conn.NewDefaultBind())
}

// openStockOn is openStock on bind instead of the default Bind.
func openStockOn(tb testing.TB, cfg *wg.Config, bind conn.Bind) tunnel {
	tb.Helper()
	var addrs []netip.Addr
	for _, p := range cfg.Interface.Addresses {
		addrs = append(addrs, p.Addr())
	}
	tdev, tnet, err := netstack.CreateNetTUN(addrs, nil, 1420)
	if err != nil {
		bind.Close()
		tb.Fatalf("stock: create netstack TUN: %v", err)
	}
	dev := device.NewDevice(tdev, bind, device.NewLogger(device.LogLevelSilent, ""))
	if err := dev.IpcSet(stockUAPI(cfg)); err != nil {
		dev.Close()
		tb.Fatalf("stock: configure: %v", err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		tb.Fatalf("stock: up: %v", err)
	}
	return &stockTunnel{dev: dev, tnet: tnet}
}

func (s *stockTunnel) dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	return s.tnet.DialContextTCPAddrPort(ctx, addr)
}

func (s *stockTunnel) listen(addr netip.AddrPort) (net.Listener, error) {
	return s.tnet.ListenTCPAddrPort(addr)
}

func (s *stockTunnel) listenPort() int {
	text, err := s.dev.IpcGet()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

func (s *stockTunnel) close() {
	s.dev.Close()
	<-s.dev.Wait()
}

// stockUAPI writes cfg as the UAPI text a user of plain wireguard-go
// writes by hand: the stock side of every benchmark is configured with it.
// Endpoints must be literal ip:port.
func stockUAPI(cfg *wg.Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\nlisten_port=%d\n", hex.EncodeToString(cfg.Interface.PrivateKey[:]), cfg.Interface.ListenPort)
	for _, p := range cfg.Peers {
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
		if p.Endpoint != "" {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
		}
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	return b.String()
}
