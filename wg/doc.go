// Package wg holds wgkit's typed WireGuard configuration and its wrapper of
// the wireguard-go engine. It never imports a TCP/IP stack: backends (the
// netstack and tun packages, or your own) hand it a wireguard-go
// tun.Device.
//
// # Keys
//
// A [Key] is 32 bytes, printed and parsed in the base64 form wg(8) uses.
// [GeneratePrivateKey] and [GeneratePresharedKey] read crypto/rand;
// [Key.PublicKey] derives a public key as `wg pubkey` does.
//
// # Configuration
//
// A [Config] mirrors a wg-quick(8) file: an [Interface] and its [Peer]s, with
// net/netip values and time.Duration instead of strings. [ParseConfig] reads
// the wg-quick format as permissively as wg-quick does and reports errors as
// a [*ConfigError] naming the line ([LoadConfig] reads a file and names it
// too); [Config.MarshalText] writes it back, and
// parsing what it writes gives an equal Config. [Config.Validate] reports
// what a device cannot run with.
//
// # Devices
//
// [NewDevice] runs the engine on any tun.Device with a Config, resolves peer
// endpoint names and brings the device up. ([NewDeviceEngine] runs the same
// Device on the kernel engines of the tun backend: the Linux kernel's
// WireGuard and WireGuardNT.) A [Device] reports typed
// [PeerStatus] values and takes run-time changes ([Device.SetPeer],
// [Device.RemovePeer], [Device.Reconfigure]) while traffic to other peers
// keeps flowing; [Device.PeerFor] tells, without formatting anything, which
// peer routes an address, for backends that check every connection. With [ListenUAPI] it also serves wg(8)'s configuration
// protocol, so `wg show` and `wg set` work on it. The protocol's text is an
// internal detail of this package.
//
// # Events and readiness
//
// [DeviceOptions.OnEvent] receives an [Event] for each completed and
// failing handshake, endpoint change and peer added, removed or idle, in
// order, from one goroutine; the same events are logged through
// [DeviceOptions.Logger]. [Device.WaitHandshake] waits for a peer to be
// reachable; [ErrHandshakeTimeout] marks a handshake that did not come.
// The device watches the engine through its log calls and state, without
// changing it: a handshake is reported within about 100 ms. It also
// starts handshakes where the engine would wait (on open, on SetPeer, and
// when it sends to a peer that stopped answering) and resolves a peer's
// host-name endpoint again when handshakes with it fail, as
// wireguard-tools' reresolve-dns.sh does.
//
// Every Device method is safe for concurrent use; Close releases every
// goroutine and socket and, called again, returns an error wrapping
// net.ErrClosed.
package wg
