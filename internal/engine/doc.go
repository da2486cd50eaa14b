// Package engine is the vocabulary shared by wgkit's WireGuard engines and
// the seam through which package wg drives them: [Engine] is what an
// engine implements (the Linux kernel's WireGuard in internal/kernelwg,
// WireGuardNT in internal/wgnt), [Config] is a change to apply and
// [State] what an engine reports.
//
// The types follow wgctrl's wgtypes (nil pointers and false flags leave a
// setting as it is; see [Config]) but hold keys as plain arrays and
// addresses as netip values, so that package wg can import this package
// without pulling in netlink, wgctrl, gVisor or a Windows driver: this
// package imports none of them, and must not.
package engine
