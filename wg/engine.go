package wg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"golang.zx2c4.com/wireguard/device"

	"github.com/wgkit/wgkit/internal/engine"
)

// The seam between Device and its engine is internal/engine's Engine:
// Device writes every change as an engine.Config and reads every status as
// an engine.State. userspace is the wireguard-go implementation, the one
// NewDevice runs; the tun backend hands kernel engines (the Linux
// `wireguard` link, WireGuardNT) to NewDeviceEngine. Only the userspace
// engine serves wg(8)'s UAPI and reports the engine's handshake steps to
// the watcher (its log hook, LookupPeer, SendHandshakeInitiation); on the
// other engines the watcher polls State.

// userspace is wireguard-go's device.Device behind the seam.
type userspace struct {
	dev *device.Device

	mu     sync.Mutex // serializes Close
	closed bool       // guarded by mu
}

var _ engine.Engine = (*userspace)(nil)

// Configure writes c as a UAPI "set" body. Like wg(8), what the engine
// applied before a rejected line stays applied. Its errors carry no
// prefix: the Device's methods, its only callers, add theirs.
func (u *userspace) Configure(c *engine.Config) error {
	if c == nil {
		return errors.New("nil config")
	}
	if err := c.Validate(); err != nil {
		return err
	}
	return u.dev.IpcSet(uapiSetBody(c))
}

// State parses a UAPI "get".
func (u *userspace) State() (*engine.State, error) {
	st, err := u.uapiState()
	if err != nil {
		return nil, err
	}
	return st.engine(), nil
}

// uapiState is State without the conversion, for the Device's own reads.
func (u *userspace) uapiState() (*engineState, error) {
	text, err := u.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("wg: read engine state: %w", err)
	}
	return parseUAPIGet(text)
}

// Up brings the engine up, which opens the Bind's sockets.
func (u *userspace) Up() error { return u.dev.Up() }

// Close stops the engine, closing the tun.Device and the Bind, and waits
// for its goroutines.
func (u *userspace) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return fmt.Errorf("wg: close engine: %w", net.ErrClosed)
	}
	u.closed = true
	u.dev.Close()
	<-u.dev.Wait()
	return nil
}

// uapiSetBody writes c, validated, as a UAPI "set" body.
func uapiSetBody(c *engine.Config) string {
	var w uapiWriter
	if c.PrivateKey != nil {
		w.key("private_key", Key(*c.PrivateKey))
	}
	if c.ListenPort != nil {
		w.line("listen_port", strconv.Itoa(*c.ListenPort))
	}
	if c.FwMark != nil {
		w.line("fwmark", strconv.FormatUint(uint64(*c.FwMark), 10))
	}
	if c.ReplacePeers {
		w.line("replace_peers", "true")
	}
	for i := range c.Peers {
		p := &c.Peers[i]
		w.key("public_key", Key(p.PublicKey))
		if p.Remove {
			w.line("remove", "true")
			continue
		}
		if p.UpdateOnly {
			w.line("update_only", "true")
		}
		if p.PresharedKey != nil {
			w.key("preshared_key", Key(*p.PresharedKey))
		}
		if p.Endpoint.IsValid() {
			w.line("endpoint", netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port()).String())
		}
		if k := p.PersistentKeepalive; k != nil {
			w.line("persistent_keepalive_interval", strconv.Itoa(int(k.Seconds())))
		}
		if p.ReplaceAllowedIPs {
			w.line("replace_allowed_ips", "true")
		}
		for _, pfx := range p.AllowedIPs {
			w.line("allowed_ip", pfx.Masked().String())
		}
	}
	return w.String()
}

// peerConfig is the engine change that makes the engine's peer p.PublicKey
// exactly p (endpoint aside): its preshared key, keepalive and allowed
// IPs replaced, its endpoint set to ep unless ep is zero.
func peerConfig(p *Peer, ep netip.AddrPort) engine.PeerConfig {
	psk := engine.Key(p.PresharedKey)
	ka := p.PersistentKeepalive
	return engine.PeerConfig{
		PublicKey:           engine.Key(p.PublicKey),
		PresharedKey:        &psk,
		Endpoint:            ep,
		PersistentKeepalive: &ka,
		ReplaceAllowedIPs:   true,
		AllowedIPs:          p.AllowedIPs,
	}
}

// engine converts st into the engines' vocabulary.
func (st *engineState) engine() *engine.State {
	out := &engine.State{
		PrivateKey: engine.Key(st.privateKey),
		ListenPort: st.listenPort,
		FwMark:     st.fwMark,
	}
	if !st.privateKey.IsZero() {
		out.PublicKey = engine.Key(st.privateKey.PublicKey())
	}
	for _, p := range st.peers {
		out.Peers = append(out.Peers, engine.PeerState{
			PublicKey:           engine.Key(p.PublicKey),
			PresharedKey:        engine.Key(st.psk[p.PublicKey]),
			Endpoint:            p.Endpoint,
			AllowedIPs:          p.AllowedIPs,
			LastHandshake:       p.LastHandshake,
			RxBytes:             p.RxBytes,
			TxBytes:             p.TxBytes,
			PersistentKeepalive: p.PersistentKeepalive,
		})
	}
	return out
}

// fromEngineState converts what an engine reports into the Device's form.
func fromEngineState(s *engine.State) *engineState {
	st := &engineState{
		privateKey: Key(s.PrivateKey),
		listenPort: s.ListenPort,
		fwMark:     s.FwMark,
		peers:      make([]PeerStatus, 0, len(s.Peers)),
		psk:        make(map[Key]Key, len(s.Peers)),
	}
	for _, p := range s.Peers {
		k := Key(p.PublicKey)
		st.peers = append(st.peers, PeerStatus{
			PublicKey:           k,
			Endpoint:            p.Endpoint,
			AllowedIPs:          p.AllowedIPs,
			LastHandshake:       p.LastHandshake,
			RxBytes:             p.RxBytes,
			TxBytes:             p.TxBytes,
			PersistentKeepalive: p.PersistentKeepalive,
		})
		st.psk[k] = Key(p.PresharedKey)
	}
	return st
}
