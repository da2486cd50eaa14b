//go:build windows

package wgnt

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"unsafe"

	"golang.org/x/sys/windows"
	"golang.zx2c4.com/wireguard/windows/driver"

	"github.com/wgkit/wgkit/internal/engine"
)

// Device is the WireGuardNT engine behind wg.Device's seam.
var _ engine.Engine = (*Device)(nil)

// The mirror layout of config.go is the driver package's: these fail to
// compile (an out-of-range index into a one-element array) when a size or
// an offset differs.
var (
	_ = [1]struct{}{}[unsafe.Sizeof(driver.Interface{})-ifaceSize]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.Interface{}.ListenPort)-ifaceListenPort]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.Interface{}.PrivateKey)-ifacePrivateKey]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.Interface{}.PublicKey)-ifacePublicKey]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.Interface{}.PeerCount)-ifacePeerCount]
	_ = [1]struct{}{}[unsafe.Sizeof(driver.Peer{})-peerSize]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.Peer{}.PublicKey)-peerPublicKey]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.Peer{}.PresharedKey)-peerPresharedKey]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.Peer{}.PersistentKeepalive)-peerKeepalive]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.Peer{}.Endpoint)-peerEndpoint]
	_ = [1]struct{}{}[unsafe.Sizeof(driver.Peer{}.Endpoint)-sockaddrSize]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.Peer{}.TxBytes)-peerTxBytes]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.Peer{}.RxBytes)-peerRxBytes]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.Peer{}.LastHandshake)-peerLastHandshake]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.Peer{}.AllowedIPsCount)-peerAllowedIPs]
	_ = [1]struct{}{}[unsafe.Sizeof(driver.AllowedIP{})-aipSize]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.AllowedIP{}.AddressFamily)-aipFamily]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.AllowedIP{}.Cidr)-aipCidr]
	_ = [1]struct{}{}[unsafe.Offsetof(driver.AllowedIP{}.Flags)-aipFlags]
	_ = [1]struct{}{}[driver.PeerUpdateOnly-peerUpdateOnly]
	_ = [1]struct{}{}[driver.PeerRemove-peerRemove]
	_ = [1]struct{}{}[driver.PeerReplaceAllowedIPs-peerReplaceAllowedIPs]
	_ = [1]struct{}{}[driver.InterfaceReplacePeers-ifaceReplacePeers]
	_ = [1]struct{}{}[windows.AF_INET6-afInet6]
)

// defaultTunnelType is Options.TunnelType's default.
const defaultTunnelType = "WireGuard"

// dllName is the driver's DLL, found as the driver package finds it.
const dllName = "wireguard.dll"

// loadDLL makes sure the driver package can call into wireguard.dll: the
// DLL loads from where the driver package looks (the program's directory,
// then System32) and has every export used. On success the DLL stays
// loaded for the life of the process, as the driver package keeps it
// once it has loaded it, so its later load cannot fail.
func loadDLL() error {
	name, err := windows.UTF16PtrFromString(dllName)
	if err != nil {
		return err
	}
	// Already loaded (by an earlier probe or the driver package): look
	// it up without taking another reference.
	const unchangedRefcount = windows.GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT
	var h windows.Handle
	loaded := false
	if windows.GetModuleHandleEx(unchangedRefcount, name, &h) != nil {
		h, err = windows.LoadLibraryEx(dllName, 0, windows.LOAD_LIBRARY_SEARCH_APPLICATION_DIR|windows.LOAD_LIBRARY_SEARCH_SYSTEM32)
		if err != nil {
			return fmt.Errorf("load %s (next to the program or in System32): %w", dllName, unsupported{err})
		}
		loaded = true
	}
	// The exports wgnt calls through the driver package, which panics on
	// the first call of one it cannot find.
	procs := [...]string{
		"WireGuardCreateAdapter", "WireGuardCloseAdapter", "WireGuardGetAdapterLUID",
		"WireGuardGetRunningDriverVersion", "WireGuardSetAdapterState",
		"WireGuardSetConfiguration", "WireGuardGetConfiguration", "WireGuardSetLogger",
	}
	for _, p := range procs {
		if _, err := windows.GetProcAddress(h, p); err != nil {
			if loaded {
				windows.FreeLibrary(h)
			}
			return fmt.Errorf("%s lacks %s (too old?): %w", dllName, p, unsupported{err})
		}
	}
	return nil
}

// unsupported is an error that also matches errors.ErrUnsupported.
type unsupported struct{ error }

func (u unsupported) Is(target error) bool { return target == errors.ErrUnsupported }
func (u unsupported) Unwrap() error        { return u.error }

// Available reports whether WireGuardNT can make adapters here. It is
// true when, in this order: wireguard.dll loads from the program's
// directory or System32 and has the exports wgnt uses; the process is
// elevated (the driver only serves Administrators); and the driver
// answers, either with its running version (WireGuardGetRunningDriverVersion)
// or, when it is not loaded yet (no adapter since boot), by creating and
// closing a probe adapter "wgkit-probe", which loads it, as wg-quick on
// Linux finds out by trying. The probe takes a second or so; the version
// query is immediate. It is safe for concurrent use, but two processes
// probing a driver not yet loaded at the same moment can meet on the
// probe adapter's GUID, and one of them then reports false.
func Available() bool {
	if loadDLL() != nil || !windows.GetCurrentProcessToken().IsElevated() {
		return false
	}
	if _, err := driver.RunningVersion(); err == nil {
		return true
	} else if !errors.Is(err, windows.ERROR_FILE_NOT_FOUND) {
		return false
	}
	// A fixed GUID, so that the probe adds no network location (NLA)
	// entry on each run.
	g := windows.GUID{Data1: 0x7767_6b69, Data2: 0x7470, Data3: 0x7262, Data4: [8]byte{'w', 'g', 'n', 't', 'p', 'r', 'o', 'b'}}
	a, err := driver.CreateAdapter("wgkit-probe", defaultTunnelType, &g)
	if err != nil {
		return false
	}
	return a.Close() == nil
}

// Device is a WireGuardNT adapter made by Create. Its methods are safe for
// concurrent use.
type Device struct {
	name string
	luid uint64

	mu      sync.Mutex      // serializes the driver calls (Adapter is not safe for concurrent use)
	adapter *driver.Adapter // guarded by mu; nil after Close
}

// Create makes the WireGuardNT adapter name (its cosmetic name, 1 to 127
// UTF-16 code units), down and without configuration, and returns its
// Device. It needs wireguard.dll next to the program (or in System32)
// and Administrator rights; the first adapter since boot installs or
// loads the driver, which may take a few seconds. The error wraps
// errors.ErrUnsupported when wireguard.dll is missing or too old, and
// os.ErrPermission without Administrator rights. Nothing is left behind
// when it fails.
func Create(name string, opts *Options) (*Device, error) {
	if opts == nil {
		opts = &Options{}
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	fail := func(err error) (*Device, error) {
		return nil, fmt.Errorf("wgnt: create adapter %q: %w", name, err)
	}
	var guid *windows.GUID
	if opts.GUID != "" {
		g, err := windows.GUIDFromString(opts.GUID)
		if err != nil {
			return fail(fmt.Errorf("bad GUID %.40q: %w", opts.GUID, err))
		}
		guid = &g
	}
	tunnelType := opts.TunnelType
	if tunnelType == "" {
		tunnelType = defaultTunnelType
	}
	if err := checkDriverString("tunnel type", tunnelType); err != nil {
		return nil, err
	}
	if err := loadDLL(); err != nil {
		return fail(err)
	}
	a, err := driver.CreateAdapter(name, tunnelType, guid)
	if err != nil {
		if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
			err = fmt.Errorf("not permitted (needs Administrator): %w", err) // Errno matches os.ErrPermission
		}
		return fail(err)
	}
	// Nothing can fail after the adapter exists: no rollback needed.
	return &Device{name: name, luid: uint64(a.LUID()), adapter: a}, nil
}

// Name returns the adapter's name as given to Create.
func (d *Device) Name() string { return d.name }

// LUID returns the adapter's locally unique identifier, the handle of
// winipcfg and internal/netconf's Windows Configurator. It is fixed at
// Create and still returned after Close (when it names no adapter).
func (d *Device) LUID() uint64 { return d.luid }

// adapterLocked returns the adapter for op, or an error wrapping
// net.ErrClosed after Close.
func (d *Device) adapterLocked(op string) (*driver.Adapter, error) {
	if d.adapter == nil {
		return nil, fmt.Errorf("wgnt: %s %s: %w", op, d.name, net.ErrClosed)
	}
	return d.adapter, nil
}

// Up sets the adapter up, which opens its UDP sockets (and picks the
// listen port if it is 0). The driver makes the sockets owned by the
// process that sets the adapter up: this one.
func (d *Device) Up() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, err := d.adapterLocked("up")
	if err != nil {
		return err
	}
	if err := a.SetAdapterState(driver.AdapterStateUp); err != nil {
		return fmt.Errorf("wgnt: up %s: %w", d.name, err)
	}
	return nil
}

// Configure applies c as one WireGuardSetConfiguration call; a call the
// driver rejects may leave part of c applied, as with wg(8). A non-zero
// c.FwMark is an error: WireGuardNT has no firewall marks. The memory it
// takes is proportional to c's peers and allowed IPs.
func (d *Device) Configure(c *engine.Config) error {
	if c == nil {
		return errors.New("wgnt: configure: nil config")
	}
	if err := c.Validate(); err != nil {
		return err
	}
	var b []byte
	r, err := fromConfig(c)
	if err == nil {
		b, err = r.marshal()
	}
	if err != nil {
		return fmt.Errorf("wgnt: configure %s: %w", d.name, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	a, err := d.adapterLocked("configure")
	if err != nil {
		return err
	}
	if err := a.SetConfiguration((*driver.Interface)(unsafe.Pointer(&b[0])), uint32(len(b))); err != nil {
		return fmt.Errorf("wgnt: configure %s: %w", d.name, err)
	}
	return nil
}

// State reads the adapter's configuration and status from the driver.
// Its FwMark is always 0.
func (d *Device) State() (*engine.State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, err := d.adapterLocked("read state of")
	if err != nil {
		return nil, err
	}
	iface, err := a.Configuration()
	if err != nil {
		return nil, fmt.Errorf("wgnt: read state of %s: %w", d.name, err)
	}
	// The driver package hides the buffer's length; the driver's own
	// counts give it, as its FirstPeer and NextPeer walk it.
	size := uintptr(ifaceSize)
	if iface.PeerCount > 0 {
		p := iface.FirstPeer()
		for i := uint32(0); i < iface.PeerCount; i++ {
			if i > 0 {
				p = p.NextPeer()
			}
			size += peerSize + uintptr(p.AllowedIPsCount)*aipSize
		}
	}
	r, err := parse(unsafe.Slice((*byte)(unsafe.Pointer(iface)), size))
	if err != nil {
		return nil, fmt.Errorf("wgnt: read state of %s: %w", d.name, err)
	}
	return r.state(), nil
}

// Close removes the adapter (WireGuardCloseAdapter deletes an adapter
// that WireGuardCreateAdapter made), which removes its addresses and
// routes with it. It is safe to call more than once; calls after the
// first return an error wrapping net.ErrClosed.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, err := d.adapterLocked("close")
	if err != nil {
		return err
	}
	d.adapter = nil
	if err := a.Close(); err != nil {
		return fmt.Errorf("wgnt: close %s: %w", d.name, err)
	}
	return nil
}
