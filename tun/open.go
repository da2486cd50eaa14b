package tun

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"

	"golang.zx2c4.com/wireguard/conn"
	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/wgkit/wgkit/internal/engine"
	"github.com/wgkit/wgkit/internal/netconf"
	"github.com/wgkit/wgkit/wg"
)

// The one open sequence of every platform (open), in order:
//
//  1. validate and default: cfg.Validate, the MTU (wg's rule and default),
//     then the platform's own checks and plan (platform.prepare), before
//     anything on the host changes;
//  2. the engine: make the interface and run a wg.Device on it
//     (startEngine picks: kernelEngine, the platform's engine and
//     wg.NewDeviceEngine; or userspaceEngine, the platform's TUN, the
//     UAPI listener and wg.NewDeviceContext);
//  3. configure the host through the platform's netconf.Configurator and
//     netconf.Apply (addresses, link up, DNS, rules, routes);
//  4. the platform's last step (platform.finish), then the Interface.
//
// Every step pushes what undoes it onto one stack of closers; a failure
// runs the stack newest first, and on success the Interface's Close runs
// the same stack. No step re-checks what a step below it guarantees:
// wg.NewDeviceContext fails when the engine is not on the configured port
// and closes the TUN, the Bind and the UAPI listener when it fails.

// platform is what an operating system supplies to open. A platform value
// serves one Open and then its Interface.
type platform interface {
	// prepare validates what only the platform knows (the name, the
	// table, the options for it) and plans the host configuration,
	// without changing anything. It returns the config the engine runs
	// (cfg itself or a copy, with the platform's fwmark) and the plan.
	prepare(s *openState) (runCfg *wg.Config, plan netconf.Plan, err error)
	// createTUN creates the interface as a TUN of mtu bytes, pushing onto
	// s.cl what makes sure the interface is gone once the TUN is closed.
	// Errors are worded for the user ("create tun: ...").
	createTUN(s *openState, mtu int) (wgtun.Device, error)
	// createKernel creates the interface with the system's own engine,
	// of mtu bytes, pushing onto s.cl what makes sure it is gone once the
	// engine is closed. The error wraps errors.ErrUnsupported when the
	// system has no such engine.
	createKernel(s *openState, mtu int) (engine.Engine, error)
	// configurator returns the host Configurator of the created interface
	// and the MTU to set through it (0: the TUN has it already).
	configurator(s *openState, mtu int) (c netconf.Configurator, setMTU int, err error)
	// finish runs once the host is configured.
	finish(s *openState, dev *wg.Device) error
	// linkMTU and linkAddrs report the interface's MTU and addresses as
	// the system has them now.
	linkMTU() (int, error)
	linkAddrs() ([]netip.Addr, error)
}

// openState is what the steps of one Open share.
type openState struct {
	cfg  *wg.Config // the caller's; not retained past Open
	name string
	opts *Options
	log  *slog.Logger
	// bind is the caller's Bind (or the platform's) while Open still owns
	// it; the engine takes it (takeBind), and Open closes it on failure
	// otherwise.
	bind conn.Bind
	cl   closers
}

// deviceOptions are the wg.DeviceOptions every engine gets.
func (s *openState) deviceOptions() *wg.DeviceOptions {
	return &wg.DeviceOptions{Logger: s.log, OnEvent: s.opts.OnEvent, Resolver: s.opts.Resolver}
}

// takeBind hands the Bind over to the engine, which owns it from then on.
func (s *openState) takeBind() conn.Bind {
	b := s.bind
	s.bind = nil
	return b
}

// closers is a stack of clean-up functions, one for each resource taken,
// in the order taken (tsnet's closeOnErrorPool). A failed Open runs it;
// a successful one hands it to the Interface, whose Close runs it.
type closers []func() error

func (c *closers) push(f func() error) { *c = append(*c, f) }

// run calls the closers newest first, carrying on past failures, and
// returns the failures, each passed through wrap, joined. The stack is
// empty afterwards.
func (c *closers) run(wrap func(error) error) error {
	var errs []error
	for i := len(*c) - 1; i >= 0; i-- {
		if err := (*c)[i](); err != nil {
			errs = append(errs, wrap(err))
		}
	}
	*c = nil
	return errors.Join(errs...)
}

// open is Open's platform-neutral sequence; see the comment at the top of
// this file.
func open(ctx context.Context, cfg *wg.Config, p platform, s *openState) (_ *Interface, err error) {
	defer func() {
		if err != nil {
			err = errors.Join(err, s.cl.run(func(err error) error { return err }))
		}
	}()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s.cfg = cfg
	mtu := cfg.Interface.EffectiveMTU()
	if s.opts.DisableUAPI && s.opts.UAPIDir != "" {
		return nil, errors.New("UAPIDir set with DisableUAPI")
	}
	runCfg, plan, err := p.prepare(s)
	if err != nil {
		return nil, err
	}
	dev, kind, err := startEngine(ctx, p, s, runCfg, mtu)
	if err != nil {
		return nil, err
	}
	nc, setMTU, err := p.configurator(s, mtu)
	if err != nil {
		return nil, err
	}
	err = netconf.Apply(ctx, nc, netconf.Settings{
		MTU:        setMTU,
		Addresses:  cfg.Interface.Addresses,
		Plan:       plan,
		DNS:        s.opts.SetDNS,
		DNSServers: cfg.Interface.DNS,
		DNSSearch:  cfg.Interface.DNSSearch,
	})
	if err != nil {
		return nil, err // Apply has undone its own changes
	}
	s.cl.push(nc.Undo)
	if err := p.finish(s, dev); err != nil {
		return nil, err
	}
	s.log.Info("tun: interface up", "name", s.name, "engine", kind.String(), "mtu", mtu, "routes", len(plan.Routes), "rules", len(plan.Rules))
	ifc := &Interface{
		name:  s.name,
		eng:   kind,
		dev:   dev,
		plat:  p,
		mtu:   mtu,
		addrs: prefixAddrs(cfg.Interface.Addresses),
		cl:    s.cl,
	}
	s.cl = nil
	return ifc, nil
}

// userspaceEngine is the engine of wireguard-go on the platform's TUN:
// the TUN, the UAPI listener unless disabled, then wg.NewDeviceContext,
// which owns the TUN, the Bind and the listener from then on (it closes
// them if it fails) and fails when it is not on the configured port.
func userspaceEngine(ctx context.Context, p platform, s *openState, runCfg *wg.Config, mtu int) (*wg.Device, error) {
	t, err := p.createTUN(s, mtu)
	if err != nil {
		return nil, err
	}
	var uapi net.Listener
	if !s.opts.DisableUAPI {
		uapi, err = wg.ListenUAPI(s.opts.UAPIDir, s.name)
		if err != nil {
			t.Close()
			return nil, err
		}
	}
	o := s.deviceOptions()
	o.Bind, o.UAPI = s.takeBind(), uapi
	dev, err := wg.NewDeviceContext(ctx, t, runCfg, o)
	if err != nil {
		return nil, err
	}
	s.cl.push(dev.Close)
	return dev, nil
}

func prefixAddrs(ps []netip.Prefix) []netip.Addr {
	out := make([]netip.Addr, len(ps))
	for i, p := range ps {
		out[i] = p.Addr()
	}
	return out
}
