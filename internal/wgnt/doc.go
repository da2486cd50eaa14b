// Package wgnt drives WireGuardNT, the WireGuard driver of the Windows
// kernel, through golang.zx2c4.com/wireguard/windows/driver: [Create]
// makes an adapter (WireGuardCreateAdapter), [Device.Configure] and
// [Device.State] set and read its configuration in the driver's binary
// form (WireGuardSetConfiguration, WireGuardGetConfiguration),
// [Device.Up] sets it up and [Device.Close] removes it. [Device.LUID] is
// the handle through which internal/netconf's Windows Configurator
// (winipcfg) sets addresses, routes and DNS, as for Wintun. Device
// implements internal/engine's Engine interface, as the Linux kernel
// engine (internal/kernelwg) does, so that wg.Device can sit on either.
//
// # What it needs
//
// wireguard.dll (from https://download.wireguard.com/wireguardnt/, of
// the program's architecture) next to the program, or in System32: it is
// loaded from those two places only, and it carries and installs the
// driver itself. Creating adapters needs Administrator rights. The
// driver package's build tag load_wgnt_from_rsrc (the DLL embedded as a
// resource) is not supported: [Available] looks for the file.
//
// # How Available decides
//
// [Available] is true when wireguard.dll loads and has the functions wgnt
// calls (the driver package would panic on a missing one, so no driver
// call is made before this check), the process is elevated, and the
// driver answers: it reports its running version, or, when it is not
// loaded yet, a probe adapter can be created and removed. Its doc gives
// the details and the cost.
//
// # What differs from wireguard-go
//
// The data path runs in the kernel: there is no Wintun adapter, no
// wireguard-go goroutine and no UAPI named pipe. wg(8) on Windows (the
// wg.exe of wireguard-windows) talks to the driver itself, through the
// adapter's device object, as wgctrl does on Windows. Firewall marks do
// not exist (a non-zero FwMark in the Config is an error). Messages of
// wireguard.dll itself go to the standard library's default logger
// (log.Default), where the driver package sends them; wgnt cannot change
// that without a process-wide setting.
//
// On other systems than Windows, Create and Available report that there
// is no WireGuardNT.
package wgnt
