// Package kernelwg drives the WireGuard of the Linux kernel: [Create]
// makes a `wireguard` link through rtnetlink (vishvananda/netlink),
// [Device.Configure] and [Device.State] set and read it through generic
// netlink (golang.zx2c4.com/wireguard/wgctrl), and [Device.Close] deletes
// the link. [Available] tells whether the running kernel can make such a
// link, as wg-quick finds out by trying.
//
// It is the kernel engine of the tun backend: package wg never imports
// it (nor netlink, nor wgctrl); its [Config] and [State] are the typed
// vocabulary of internal/engine, whose Engine interface Device implements.
//
// Addresses, MTU changes after creation, routes and rules are not its job
// (internal/netconf does them for every backend). On other systems than
// Linux, Create and Available report that there is no kernel engine.
package kernelwg
