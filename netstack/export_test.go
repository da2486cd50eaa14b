package netstack

import (
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// SetTCPOption sets a TCP protocol option on n's stack, so that the
// external tests can compare loss-recovery settings against the defaults
// newStack chooses. It affects connections opened after the call.
func SetTCPOption(n *Net, opt tcpip.SettableTransportProtocolOption) error {
	if terr := n.stack.SetTransportProtocolOption(tcp.ProtocolNumber, opt); terr != nil {
		return fmt.Errorf("netstack: set TCP option %T: %s", opt, terr)
	}
	return nil
}

// RaceEnabled reports whether the tests run under the race detector, for
// the external tests' time bounds.
const RaceEnabled = raceEnabled
