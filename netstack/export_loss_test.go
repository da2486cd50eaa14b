package netstack

import (
	"fmt"
	"net"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TCPRecoveryStats returns the loss-recovery counters of n's stack
// (retransmits, recoveries entered, timeouts, spurious recoveries) as one
// line, for TestLossSweep's logs.
func TCPRecoveryStats(n *Net) string {
	s := n.stack.Stats().TCP
	return fmt.Sprintf("retransmits=%d fast-retransmit=%d sack-recovery=%d fast-recovery=%d timeouts=%d tlp-recovery=%d spurious=%d spurious-rto=%d dsack-segs=%d",
		s.Retransmits.Value(), s.FastRetransmit.Value(), s.SACKRecovery.Value(), s.FastRecovery.Value(),
		s.Timeouts.Value(), s.TLPRecovery.Value(), s.SpuriousRecovery.Value(), s.SpuriousRTORecovery.Value(),
		s.SegmentsAckedWithDSACK.Value())
}

// TCPConnInfo returns the sender state of c, a TCP conn of this package,
// as one line: state, congestion window, RTO, smoothed RTT, the
// endpoint's retransmission counters. It is for TestRACKCrawl's logs.
func TCPConnInfo(c net.Conn) string {
	tc, ok := c.(*tcpConn)
	if !ok {
		return fmt.Sprintf("not a netstack TCP conn: %T", c)
	}
	var info tcpip.TCPInfoOption
	if terr := tc.ep.GetSockOpt(&info); terr != nil {
		return "tcp info: " + terr.String()
	}
	out := fmt.Sprintf("cc=%d cwnd=%d ssthresh=%d rto=%v rtt=%v reord=%v", info.CcState, info.SndCwnd, info.SndSsthresh, info.RTO, info.RTT, info.ReorderSeen)
	if st, ok := tc.ep.Stats().(*tcp.Stats); ok {
		e := &st.SendErrors
		out += fmt.Sprintf(" sent=%d timeouts=%d fastrtx=%d rtx=%d", st.SegmentsSent.Value(), e.Timeouts.Value(), e.FastRetransmit.Value(), e.Retransmits.Value())
	}
	return out
}

// SetReorderHold sets how long n's link holds a TCP segment that arrived
// above a hole in its flow (0: not at all), for TestLossSweep's
// comparisons. Set it before traffic flows.
func SetReorderHold(n *Net, d time.Duration) {
	n.ep.gmu.Lock()
	defer n.ep.gmu.Unlock()
	n.ep.reorder.hold = d
}
