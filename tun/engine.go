package tun

import (
	"context"
	"errors"
	"fmt"

	"github.com/wgkit/wgkit/internal/engine"
	"github.com/wgkit/wgkit/wg"
)

// Engine selects the WireGuard engine of an interface: the operating
// system's own (the kernel's WireGuard on Linux, WireGuardNT on Windows)
// or wireguard-go in this process. See the package documentation.
type Engine int

const (
	// EngineAuto, the default, runs the system's engine when it is there
	// and wireguard-go otherwise, as wg-quick does: on Linux the kernel's
	// WireGuard when creating a `wireguard` link works, on Windows
	// WireGuardNT when its wireguard.dll loads and the driver answers.
	// With Options.Bind set it runs wireguard-go, the only engine that
	// takes a Bind.
	EngineAuto Engine = iota
	// EngineKernel runs the system's engine and fails, with an error
	// wrapping errors.ErrUnsupported, when it is missing (no wireguard
	// module on Linux; no wireguard.dll or no driver on Windows).
	EngineKernel
	// EngineUserspace runs wireguard-go on a TUN (Linux) or a Wintun
	// adapter (Windows).
	EngineUserspace
)

// String returns "auto", "kernel" or "userspace".
func (e Engine) String() string {
	switch e {
	case EngineAuto:
		return "auto"
	case EngineKernel:
		return "kernel"
	case EngineUserspace:
		return "userspace"
	}
	return fmt.Sprintf("Engine(%d)", int(e))
}

// startEngine is step 2 of open: it runs the engine Options.Engine asks
// for (see EngineAuto) and reports which one runs.
func startEngine(ctx context.Context, p platform, s *openState, runCfg *wg.Config, mtu int) (*wg.Device, Engine, error) {
	want := s.opts.Engine
	switch want {
	case EngineUserspace:
		dev, err := userspaceEngine(ctx, p, s, runCfg, mtu)
		return dev, EngineUserspace, err
	case EngineAuto:
		if s.bind != nil {
			dev, err := userspaceEngine(ctx, p, s, runCfg, mtu)
			return dev, EngineUserspace, err
		}
	case EngineKernel:
		if s.bind != nil {
			return nil, 0, errors.New("kernel engine: Options.Bind needs the userspace engine")
		}
	default:
		return nil, 0, fmt.Errorf("unknown engine %d", int(want))
	}
	// Only the engine's absence falls back: a failure after the
	// interface exists is the user's to see.
	e, err := p.createKernel(s, mtu)
	if err != nil {
		if want == EngineAuto && errors.Is(err, errors.ErrUnsupported) {
			s.log.Debug("tun: no kernel engine, running wireguard-go", "err", err)
			dev, err := userspaceEngine(ctx, p, s, runCfg, mtu)
			return dev, EngineUserspace, err
		}
		return nil, 0, &prefixError{"kernel engine: ", err}
	}
	dev, err := kernelEngine(ctx, s, e, runCfg)
	if err != nil {
		return nil, 0, &prefixError{"kernel engine: ", err}
	}
	return dev, EngineKernel, nil
}

// kernelEngine runs the Device on e, the system's engine that the
// platform made (createKernel): wg.NewDeviceEngine owns e from then on
// (it closes it if it fails). No UAPI socket: wg(8) reaches such an
// interface by its own means.
func kernelEngine(ctx context.Context, s *openState, e engine.Engine, runCfg *wg.Config) (*wg.Device, error) {
	dev, err := wg.NewDeviceEngine(ctx, e, runCfg, s.deviceOptions())
	if err != nil {
		return nil, err
	}
	s.cl.push(dev.Close)
	return dev, nil
}
