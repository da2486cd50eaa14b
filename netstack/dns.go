package netstack

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// The tunnel's DNS client. It is a small stub resolver rather than a
// net.Resolver because the Go resolver always reads the host's
// /etc/resolv.conf (search domains, ndots) and /etc/hosts: names would be
// expanded with the host's search domains, which would leak the host's
// local domain to the tunnel's DNS server, and the config's own search
// domains could not be applied. The stub sends only to the config's DNS
// servers, over the tunnel, and follows resolv.conf's defaults otherwise:
// ndots 1, two attempts per server, TCP when a UDP answer is truncated.

const (
	dnsPort     = 53
	dnsAttempts = 2
	// dnsTryTimeout bounds one query to one server.
	dnsTryTimeout = 2 * time.Second
	// dnsUDPSize is the EDNS(0) UDP payload size we advertise (the DNS
	// flag day 2020 value, which avoids IP fragmentation).
	dnsUDPSize = 1232
)

// errDNSNotFound means the name does not exist (NXDOMAIN) or has no
// address records.
var errDNSNotFound = errors.New("no such host")

// errLameReferral is an empty answer from a server that neither is
// authoritative nor offers recursion: it knows nothing of the name, so the
// next server is asked, as Go's resolver and libresolv do
// (golang.org/issue/15434).
var errLameReferral = errors.New("lame referral")

// LookupHost looks up host with the tunnel's DNS servers and returns its
// IPv4 and IPv6 addresses. A literal IP address is returned as is. A name
// without a trailing dot is tried with the configuration's search domains
// (DNS= entries that are not addresses) in resolv.conf's order with
// ndots 1. Queries go over UDP with a retry, and over TCP when an answer
// is truncated; the host's resolver and its configuration are never used.
// ctx bounds the lookup. Errors are *net.DNSError; IsNotFound reports a
// name that does not exist, and errors.Is finds the cause of a failure:
// net.ErrClosed after Close, the context's error, or ErrNoRoute for DNS
// servers no peer's AllowedIPs cover.
func (n *Net) LookupHost(ctx context.Context, host string) ([]string, error) {
	addrs, err := n.lookupAddrs(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out, nil
}

// Resolver returns a net.Resolver for APIs that need one. It sends every
// query over the tunnel to the configuration's DNS servers (rotating among
// them) whatever server the host's configuration names, so no query
// leaves through the host's network. But it is the Go resolver: it also
// consults the host's /etc/hosts and expands names with the host's
// resolv.conf search domains and options, not the tunnel's. Prefer
// LookupHost (and DialContext, which uses it), which depend on the tunnel
// configuration only. The Resolver fails every lookup if the
// configuration has no DNS servers.
func (n *Net) Resolver() *net.Resolver { return n.res }

func (n *Net) newResolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			if n.isClosed() {
				return nil, &net.OpError{Op: "dial", Net: network, Err: net.ErrClosed}
			}
			if len(n.dns) == 0 {
				return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("netstack: the tunnel configuration has no DNS servers")}
			}
			server := n.dns[int(n.dnsRR.Add(1)-1)%len(n.dns)]
			return n.DialContext(ctx, network, netip.AddrPortFrom(server, dnsPort).String())
		},
	}
}

// lookupAddrs resolves host to addresses (see LookupHost).
func (n *Net) lookupAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap().WithZone("")}, nil
	}
	// The errors unwrap to their cause (net.ErrClosed, the context's
	// error, ErrNoRoute...), so that errors.Is works through a lookup.
	dnsErr := func(cause error, msg string, notFound, timeout bool) error {
		return &net.DNSError{UnwrapErr: cause, Err: msg, Name: host, IsNotFound: notFound, IsTimeout: timeout}
	}
	closed := func() error { return dnsErr(net.ErrClosed, "netstack: "+net.ErrClosed.Error(), false, false) }
	if n.isClosed() {
		return nil, closed()
	}
	if len(n.dns) == 0 {
		return nil, dnsErr(nil, "netstack: the tunnel configuration has no DNS servers", false, false)
	}
	if !isDomainName(host) {
		return nil, dnsErr(nil, errDNSNotFound.Error(), true, false)
	}
	var lastErr error
	for _, name := range searchNames(host, n.search) {
		addrs, err := n.lookupName(ctx, name)
		if err == nil {
			return addrs, nil
		}
		if !errors.Is(err, errDNSNotFound) {
			lastErr = err
		}
		if ctxErr(ctx) != nil || n.isClosed() {
			break
		}
	}
	if n.isClosed() {
		return nil, closed()
	}
	if err := ctxErr(ctx); err != nil {
		return nil, dnsErr(err, err.Error(), false, errors.Is(err, context.DeadlineExceeded))
	}
	if lastErr != nil {
		var ne net.Error
		timeout := errors.As(lastErr, &ne) && ne.Timeout()
		return nil, dnsErr(lastErr, lastErr.Error(), false, timeout)
	}
	return nil, dnsErr(nil, errDNSNotFound.Error(), true, false)
}

// ctxErr is ctx.Err(), or context.DeadlineExceeded once ctx's deadline
// has passed even if ctx's timer has not fired yet: a conn deadline set
// from ctx may expire first, and the failure is then the context's.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// searchNames lists the fully qualified names to try for host, as
// resolv.conf(5) does with ndots 1: a name with a dot is tried as is
// first, a name without one last; a trailing dot means as is only.
func searchNames(host string, search []string) []string {
	if strings.HasSuffix(host, ".") {
		return []string{host}
	}
	var rel []string
	for _, s := range search {
		s = strings.Trim(s, ".")
		if s == "" {
			continue
		}
		if name := host + "." + s + "."; len(name) <= 254 {
			rel = append(rel, name)
		}
	}
	abs := host + "."
	if strings.Contains(host, ".") {
		return append([]string{abs}, rel...)
	}
	return append(rel, abs)
}

// lookupName asks for the A and AAAA records of the fully qualified name
// in parallel and returns the IPv4 addresses first. It returns an error
// wrapping errDNSNotFound if the name has neither.
func (n *Net) lookupName(ctx context.Context, name string) ([]netip.Addr, error) {
	var (
		wg         sync.WaitGroup
		a4, a6     []netip.Addr
		err4, err6 error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		a6, err6 = n.query(ctx, name, dnsmessage.TypeAAAA)
	}()
	a4, err4 = n.query(ctx, name, dnsmessage.TypeA)
	wg.Wait()
	if addrs := append(a4, a6...); len(addrs) > 0 {
		return addrs, nil
	}
	for _, err := range []error{err4, err6} {
		if err != nil && !errors.Is(err, errDNSNotFound) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%s: %w", name, errDNSNotFound)
}

// query asks the servers in turn, dnsAttempts rounds, for records of type
// qtype of name. A NXDOMAIN or empty answer from one server is final,
// unless it is a lame referral.
func (n *Net) query(ctx context.Context, name string, qtype dnsmessage.Type) ([]netip.Addr, error) {
	q, err := newQuery(name, qtype)
	if err != nil {
		return nil, err
	}
	lastErr := errors.New("no DNS server answered")
	for range dnsAttempts {
		for _, server := range n.dns {
			if err := ctxErr(ctx); err != nil {
				return nil, err
			}
			addrs, err := n.exchange(ctx, netip.AddrPortFrom(server, dnsPort), q, name, qtype)
			if err == nil || errors.Is(err, errDNSNotFound) {
				return addrs, err
			}
			lastErr = fmt.Errorf("server %s: %w", server, err)
			if errors.Is(err, net.ErrClosed) || errors.Is(err, ErrNoRoute) {
				// Retrying cannot help.
				return nil, lastErr
			}
		}
	}
	return nil, lastErr
}

// dnsQuery is one encoded question.
type dnsQuery struct {
	id  uint16
	msg []byte // without the TCP length prefix
}

func newQuery(name string, qtype dnsmessage.Type) (dnsQuery, error) {
	qname, err := dnsmessage.NewName(name)
	if err != nil {
		return dnsQuery{}, err
	}
	var idb [2]byte
	rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return dnsQuery{}, err
	}
	if err := b.Question(dnsmessage.Question{Name: qname, Type: qtype, Class: dnsmessage.ClassINET}); err != nil {
		return dnsQuery{}, err
	}
	if err := b.StartAdditionals(); err != nil {
		return dnsQuery{}, err
	}
	var rh dnsmessage.ResourceHeader
	if err := rh.SetEDNS0(dnsUDPSize, dnsmessage.RCodeSuccess, false); err != nil {
		return dnsQuery{}, err
	}
	if err := b.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
		return dnsQuery{}, err
	}
	msg, err := b.Finish()
	if err != nil {
		return dnsQuery{}, err
	}
	return dnsQuery{id: id, msg: msg}, nil
}

// exchange sends q to server over UDP, and again over TCP if the answer
// is truncated, and returns the answer's addresses.
func (n *Net) exchange(ctx context.Context, server netip.AddrPort, q dnsQuery, name string, qtype dnsmessage.Type) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, dnsTryTimeout)
	defer cancel()
	resp, err := n.exchangeUDP(ctx, server, q, name, qtype)
	if err != nil {
		return nil, err
	}
	if resp.Truncated {
		resp, err = n.exchangeTCP(ctx, server, q, name, qtype)
		if err != nil {
			return nil, err
		}
	}
	return answerAddrs(resp, qtype)
}

// answerAddrs returns the addresses of type qtype in a response,
// errDNSNotFound when the name does not exist or has none, or
// errLameReferral.
func answerAddrs(resp *dnsmessage.Message, qtype dnsmessage.Type) ([]netip.Addr, error) {
	switch resp.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return nil, errDNSNotFound
	default:
		return nil, fmt.Errorf("server misbehaving: %s", resp.RCode)
	}
	if len(resp.Answers) == 0 && !resp.Authoritative && !resp.RecursionAvailable && !hasOPT(resp.Additionals) {
		return nil, errLameReferral
	}
	var addrs []netip.Addr
	for _, rr := range resp.Answers {
		switch b := rr.Body.(type) {
		case *dnsmessage.AResource:
			if qtype == dnsmessage.TypeA {
				addrs = append(addrs, netip.AddrFrom4(b.A))
			}
		case *dnsmessage.AAAAResource:
			if qtype == dnsmessage.TypeAAAA {
				addrs = append(addrs, netip.AddrFrom16(b.AAAA))
			}
		}
	}
	if len(addrs) == 0 {
		return nil, errDNSNotFound
	}
	return addrs, nil
}

// hasOPT reports whether rrs hold an EDNS(0) OPT record: a server that
// speaks EDNS answered, and its empty answer is not taken for a lame
// referral (Go's resolver makes the same exception).
func hasOPT(rrs []dnsmessage.Resource) bool {
	for _, rr := range rrs {
		if rr.Header.Type == dnsmessage.TypeOPT {
			return true
		}
	}
	return false
}

// withDeadline applies ctx's deadline to c and closes c if ctx is
// cancelled first; call the returned stop when done with c.
func withDeadline(ctx context.Context, c net.Conn) (stop func() bool) {
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	return context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
}

func (n *Net) exchangeUDP(ctx context.Context, server netip.AddrPort, q dnsQuery, name string, qtype dnsmessage.Type) (*dnsmessage.Message, error) {
	c, err := n.DialContext(ctx, "udp", server.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	defer withDeadline(ctx, c)()
	if _, err := c.Write(q.msg); err != nil {
		return nil, err
	}
	buf := make([]byte, 4096)
	for {
		k, err := c.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		// Ignore stray or spoofed datagrams, as the Go resolver does.
		if resp, ok := parseAnswer(buf[:k], q.id, name, qtype); ok {
			return resp, nil
		}
	}
}

func (n *Net) exchangeTCP(ctx context.Context, server netip.AddrPort, q dnsQuery, name string, qtype dnsmessage.Type) (*dnsmessage.Message, error) {
	c, err := n.DialContext(ctx, "tcp", server.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	defer withDeadline(ctx, c)()
	req := make([]byte, 2+len(q.msg))
	binary.BigEndian.PutUint16(req, uint16(len(q.msg)))
	copy(req[2:], q.msg)
	if _, err := c.Write(req); err != nil {
		return nil, err
	}
	var lb [2]byte
	if _, err := io.ReadFull(c, lb[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(lb[:]))
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, err
	}
	resp, ok := parseAnswer(buf, q.id, name, qtype)
	if !ok {
		return nil, errors.New("invalid DNS response over TCP")
	}
	return resp, nil
}

// parseAnswer parses b and reports whether it is the response to the
// query (id, name, qtype).
func parseAnswer(b []byte, id uint16, name string, qtype dnsmessage.Type) (*dnsmessage.Message, bool) {
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		return nil, false
	}
	if !m.Response || m.ID != id || len(m.Questions) != 1 {
		return nil, false
	}
	qq := m.Questions[0]
	if qq.Type != qtype || qq.Class != dnsmessage.ClassINET || !strings.EqualFold(qq.Name.String(), name) {
		return nil, false
	}
	return &m, true
}

// isDomainName reports whether s is a syntactically valid host name
// (RFC 1035 with the underscores found in practice), as the net package
// checks before it sends a query.
func isDomainName(s string) bool {
	if s == "." {
		return false
	}
	l := len(s)
	if l == 0 || l > 254 || l == 254 && s[l-1] != '.' {
		return false
	}
	last := byte('.')
	nonNumeric := false
	partlen := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		default:
			return false
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_':
			nonNumeric = true
			partlen++
		case '0' <= c && c <= '9':
			partlen++
		case c == '-':
			if last == '.' {
				return false
			}
			partlen++
			nonNumeric = true
		case c == '.':
			if last == '.' || last == '-' || partlen > 63 || partlen == 0 {
				return false
			}
			partlen = 0
		}
		last = c
	}
	return last != '-' && partlen <= 63 && nonNumeric
}
