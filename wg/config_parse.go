package wg

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ConfigError is the error ParseConfig returns for a line it cannot accept.
// Use errors.As to get the line number:
//
//	var cerr *wg.ConfigError
//	if errors.As(err, &cerr) {
//		fmt.Println("bad line", cerr.Line)
//	}
type ConfigError struct {
	// Line is the 1-based number of the offending line. For a [Peer]
	// section without a PublicKey it is the line of the [Peer] header.
	Line int
	// Err describes the problem.
	Err error
}

// Error returns the message in the form
// `wg: parse config line 7: unknown key "Foo" in [Interface]`.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("wg: parse config line %d: %v", e.Line, e.Err)
}

// Unwrap returns e.Err.
func (e *ConfigError) Unwrap() error { return e.Err }

// ParseConfig reads a configuration in the wg-quick(8) format: the keys of
// wg(8) setconf plus wg-quick's Address, DNS, MTU, Table, PreUp, PostUp,
// PreDown, PostDown and SaveConfig in [Interface].
//
// It follows the two tools' rules: section names and keys are
// case-insensitive; '#' starts a comment except in the hook commands
// (PreUp, PostUp, PreDown, PostDown), which keep their whole value, so
// that a '#' inside shell quotes survives (the wg-quick of wireguard-tools
// v1.0.20210914 still cuts hooks at the first '#'); CRLF
// line endings and whitespace around keys and values are ignored, and as
// in wg(8) all whitespace inside the value of a wg(8) key is removed;
// lists are separated by commas, spaces or both; repeated Address, DNS
// and AllowedIPs lines append, and a repeated single-valued key
// overrides the earlier one. Several [Interface] sections are merged as
// wg-quick and wg(8) merge them: lists append, later values win.
//
// Addresses and AllowedIPs are kept as written, host bits included; an
// address without a prefix length is a single host (/32 or /128). A DNS
// entry that looks like an IP address (digits and dots only, or containing
// ':', as wg-quick tells them apart) must be one and goes to DNS; any
// other entry is a search domain and goes to DNSSearch. Endpoint host
// names are not resolved; the endpoint is stored as net.JoinHostPort
// writes it, so an unbracketed IPv6 host that wg(8) accepts
// ("fe80::1:51820") is stored bracketed.
//
// Deliberately stricter than the tools: ListenPort and the Endpoint port
// must be numbers, not service names; an Endpoint port must be 1..65535;
// MTU must pass CheckMTU: 576..65535, or 1280..65535 when an Address is
// IPv6 (wg-quick leaves it to ip(8)); Table must not
// contain whitespace; a search domain may hold only letters, digits and
// ".-_~", an endpoint host name and an IPv6 zone only letters, digits and
// ".-_"; an AllowedIPs entry may not carry wg(8) set's '+'/'-' prefix; a
// key may not have whitespace inside its name ("Private Key").
//
// ParseConfig does not call Validate: a file wg-quick accepts parses even
// if a device could not run it (no private key, for instance).
//
// Input is bounded, so that a hostile or broken file costs little: at
// most MaxConfigSize bytes in all, MaxConfigLine bytes per line, MaxPeers
// peers and MaxAllowedIPs allowed IPs; endpoint host names and search
// domains of at most 253 bytes (the longest DNS name). ParseConfig stops
// reading at the first line that breaks a bound. Error messages quote at
// most the first 40 bytes of a bad value.
//
// A problem with a line is returned as a *ConfigError naming the line.
func ParseConfig(r io.Reader) (*Config, error) {
	p := &parser{cfg: &Config{}}
	// One byte over the cap tells a file of exactly MaxConfigSize bytes
	// from a longer one.
	br := bufio.NewReader(io.LimitReader(r, MaxConfigSize+1))
	var buf []byte
	size := 0
	for {
		var err error
		buf, err = readConfigLine(br, buf[:0])
		if errors.Is(err, errLineTooLong) {
			p.line++
			return nil, p.lineError(err)
		}
		if len(buf) > 0 {
			p.line++
			size += len(buf)
			if size > MaxConfigSize {
				return nil, p.lineError(fmt.Errorf("config longer than %d bytes", MaxConfigSize))
			}
			line := string(bytes.TrimSuffix(buf, []byte("\n")))
			if perr := p.parseLine(line); perr != nil {
				return nil, p.lineError(perr)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("wg: parse config: %w", err)
		}
	}
	if err := p.finishPeer(); err != nil {
		return nil, err
	}
	if err := checkMTU(p.cfg.Interface.MTU, p.cfg.Interface.Addresses); err != nil {
		return nil, &ConfigError{Line: p.mtuLine, Err: err}
	}
	return p.cfg, nil
}

var errLineTooLong = fmt.Errorf("line longer than %d bytes", MaxConfigLine)

// readConfigLine appends the next line of br, with its '\n' if any, to
// buf. For a line longer than MaxConfigLine (not counting the '\n') it
// returns errLineTooLong, having read at most one buffer's worth past the
// cap.
func readConfigLine(br *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		frag, err := br.ReadSlice('\n')
		if n := len(buf) + len(frag); n > MaxConfigLine+1 ||
			n == MaxConfigLine+1 && !bytes.HasSuffix(frag, []byte("\n")) {
			return buf, errLineTooLong
		}
		buf = append(buf, frag...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return buf, err
		}
	}
}

// maxQuote is the most of a bad value that an error message quotes.
const maxQuote = 40

// quote returns s quoted as %q does; a string longer than maxQuote bytes
// is cut to its first maxQuote (on a character boundary) and followed by
// "..." after the closing quote.
func quote(s string) string {
	if len(s) <= maxQuote {
		return strconv.Quote(s)
	}
	cut := maxQuote
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}

// section is the part of the file the parser is in.
type section int

const (
	sectionNone section = iota
	sectionInterface
	sectionPeer
)

func (s section) String() string {
	switch s {
	case sectionInterface:
		return "[Interface]"
	case sectionPeer:
		return "[Peer]"
	}
	return "no section"
}

// parser holds the state of one ParseConfig call.
type parser struct {
	cfg     *Config
	line    int     // number of the current line
	section section // section of the current line
	peer    *Peer   // the peer being filled in [Peer]; nil elsewhere

	peerLine   int  // line of the current [Peer] header
	peerHasKey bool // the current peer had a PublicKey line
	allowedIPs int  // allowed IPs of all peers so far
	mtuLine    int  // line of the last MTU line
}

// valueKind says how a key's raw value is cleaned before its handler sees it.
type valueKind int

const (
	// wgValue: a wg(8) key. As wg(8) does, the comment is cut and all
	// whitespace is removed; an empty value is an error.
	wgValue valueKind = iota
	// quickValue: a wg-quick key. The comment is cut and the value trimmed.
	quickValue
	// hookValue: a hook command. Only trimmed: '#' belongs to the command.
	hookValue
)

// keySpec describes one key of a section.
type keySpec struct {
	name  string // canonical spelling
	kind  valueKind
	iface func(*Interface, string) error // set for [Interface] keys
	peer  func(*Peer, string) error      // set for [Peer] keys
}

// keySpecs lists every key ParseConfig knows. It is never modified.
var keySpecs = []keySpec{
	{name: "PrivateKey", kind: wgValue, iface: parsePrivateKey},
	{name: "ListenPort", kind: wgValue, iface: parseListenPort},
	{name: "FwMark", kind: wgValue, iface: parseFwMark},
	{name: "Address", kind: quickValue, iface: parseAddress},
	{name: "DNS", kind: quickValue, iface: parseDNS},
	{name: "MTU", kind: quickValue, iface: parseMTU},
	{name: "Table", kind: quickValue, iface: parseTable},
	{name: "SaveConfig", kind: quickValue, iface: parseSaveConfig},
	{name: "PreUp", kind: hookValue, iface: func(i *Interface, v string) error { i.PreUp = append(i.PreUp, v); return nil }},
	{name: "PostUp", kind: hookValue, iface: func(i *Interface, v string) error { i.PostUp = append(i.PostUp, v); return nil }},
	{name: "PreDown", kind: hookValue, iface: func(i *Interface, v string) error { i.PreDown = append(i.PreDown, v); return nil }},
	{name: "PostDown", kind: hookValue, iface: func(i *Interface, v string) error { i.PostDown = append(i.PostDown, v); return nil }},
	{name: "PublicKey", kind: wgValue, peer: parsePublicKey},
	{name: "PresharedKey", kind: wgValue, peer: parsePresharedKey},
	{name: "Endpoint", kind: wgValue, peer: parsePeerEndpoint},
	{name: "AllowedIPs", kind: wgValue, peer: parseAllowedIPs},
	{name: "PersistentKeepalive", kind: wgValue, peer: parseKeepalive},
}

// section returns the section the key belongs in.
func (k keySpec) section() section {
	if k.iface != nil {
		return sectionInterface
	}
	return sectionPeer
}

func lookupKey(name string) (keySpec, bool) {
	for _, k := range keySpecs {
		if strings.EqualFold(k.name, name) {
			return k, true
		}
	}
	return keySpec{}, false
}

// asciiSpace is C's isspace set, which wg(8) and bash's [[:space:]] use.
const asciiSpace = " \t\n\v\f\r"

func trimSpace(s string) string { return strings.Trim(s, asciiSpace) }

func removeSpace(s string) string {
	return strings.Map(func(r rune) rune {
		if strings.ContainsRune(asciiSpace, r) {
			return -1
		}
		return r
	}, s)
}

func (p *parser) parseLine(raw string) error {
	stripped, _, _ := strings.Cut(raw, "#")
	stripped = trimSpace(stripped)
	if stripped == "" {
		return nil
	}
	if strings.HasPrefix(stripped, "[") {
		return p.parseHeader(stripped)
	}
	keyText, value, ok := strings.Cut(stripped, "=")
	key := trimSpace(keyText)
	if !ok {
		return fmt.Errorf("want \"Key = Value\" or a section header, got %s", quote(stripped))
	}
	spec, ok := lookupKey(key)
	if !ok {
		return fmt.Errorf("unknown key %s in %v", quote(key), p.section)
	}
	switch spec.kind {
	case wgValue:
		value = removeSpace(value)
		if value == "" {
			return fmt.Errorf("empty value for %s", spec.name)
		}
	case quickValue:
		value = trimSpace(value)
	case hookValue:
		// The whole value, comment included: '=' lies before any '#'.
		_, value, _ = strings.Cut(raw, "=")
		value = trimSpace(value)
	}
	return p.apply(spec, key, value)
}

func (p *parser) apply(spec keySpec, key, value string) error {
	var err error
	switch {
	case p.section == sectionNone:
		return fmt.Errorf("key %s outside a section; it belongs in %v", quote(key), spec.section())
	case p.section == sectionInterface && spec.iface != nil:
		err = spec.iface(&p.cfg.Interface, value)
		if spec.name == "MTU" {
			p.mtuLine = p.line
		}
	case p.section == sectionPeer && spec.peer != nil:
		had := len(p.peer.AllowedIPs)
		err = spec.peer(p.peer, value)
		if err == nil && spec.name == "PublicKey" {
			p.peerHasKey = true
		}
		p.allowedIPs += len(p.peer.AllowedIPs) - had
		if p.allowedIPs > MaxAllowedIPs {
			return errTooManyAllowedIPs
		}
	default:
		return fmt.Errorf("key %s belongs in %v, not in %v", quote(key), spec.section(), p.section)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", spec.name, err)
	}
	return nil
}

func (p *parser) parseHeader(h string) error {
	var next section
	switch {
	case strings.EqualFold(h, "[Interface]"):
		next = sectionInterface
	case strings.EqualFold(h, "[Peer]"):
		next = sectionPeer
	default:
		return fmt.Errorf("unknown section %s; want [Interface] or [Peer]", quote(h))
	}
	if err := p.finishPeer(); err != nil {
		return err
	}
	p.section = next
	if next == sectionPeer {
		if len(p.cfg.Peers) == MaxPeers {
			return errTooManyPeers
		}
		p.cfg.Peers = append(p.cfg.Peers, Peer{})
		p.peer = &p.cfg.Peers[len(p.cfg.Peers)-1]
		p.peerLine = p.line
		p.peerHasKey = false
	}
	return nil
}

// finishPeer checks the [Peer] section that just ended, if any.
func (p *parser) finishPeer() error {
	if p.peer == nil {
		return nil
	}
	p.peer = nil
	if !p.peerHasKey {
		return &ConfigError{Line: p.peerLine, Err: errors.New("[Peer] has no PublicKey")}
	}
	return nil
}

// lineError wraps err in a *ConfigError for the current line, unless it
// already is one (finishPeer names the [Peer] header's line).
func (p *parser) lineError(err error) error {
	var cerr *ConfigError
	if errors.As(err, &cerr) {
		return err
	}
	return &ConfigError{Line: p.line, Err: err}
}

// keyError is a ParseKey error inside a ConfigError, without its own
// "wg: " prefix.
type keyError struct{ err error }

func (e keyError) Error() string { return strings.TrimPrefix(e.err.Error(), "wg: ") }
func (e keyError) Unwrap() error { return e.err }

// parseKeyValue is ParseKey for a config value. The value is never put
// in the message: it may be a private key.
func parseKeyValue(dst *Key, v string) error {
	k, err := ParseKey(v)
	if err != nil {
		return keyError{err}
	}
	*dst = k
	return nil
}

func parsePrivateKey(i *Interface, v string) error { return parseKeyValue(&i.PrivateKey, v) }
func parsePublicKey(p *Peer, v string) error       { return parseKeyValue(&p.PublicKey, v) }
func parsePresharedKey(p *Peer, v string) error    { return parseKeyValue(&p.PresharedKey, v) }

func parseListenPort(i *Interface, v string) error {
	n, err := parseDecimal(v, 65535)
	if err != nil {
		return fmt.Errorf("bad port %s: want 0..65535", quote(v))
	}
	i.ListenPort = int(n)
	return nil
}

// parseFwMark accepts what wg(8) does: "off", a decimal number, or a hex
// number starting with a lowercase "0x", at most 0xffffffff.
func parseFwMark(i *Interface, v string) error {
	if strings.EqualFold(v, "off") {
		i.FwMark = 0
		return nil
	}
	base, digits := 10, v
	if len(v) > 2 && strings.HasPrefix(v, "0x") {
		base, digits = 16, v[2:]
	}
	n, err := strconv.ParseUint(digits, base, 32)
	if err != nil {
		return fmt.Errorf("bad fwmark %s: want off, 0..4294967295 or 0x0..0xffffffff", quote(v))
	}
	i.FwMark = uint32(n)
	return nil
}

// parseDecimal parses a number of ASCII digits only (no sign, no
// underscores) that is at most max.
func parseDecimal(v string, max uint64) (uint64, error) {
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0, errors.New("not a decimal number")
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > max {
		return 0, errors.New("out of range")
	}
	return n, nil
}

func parseAddress(i *Interface, v string) error {
	for _, s := range splitList(v) {
		pfx, err := parsePrefix(s)
		if err != nil {
			return err
		}
		i.Addresses = append(i.Addresses, pfx)
	}
	return nil
}

// splitList splits a wg-quick list value as bash does after wg-quick turns
// commas into spaces: on commas, spaces, tabs and newlines, dropping empty
// entries.
func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n'
	})
}

// parsePrefix parses an address with an optional prefix length, keeping
// the host bits. Without a prefix length the address is a single host.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad prefix %s", quote(s))
		}
		return pfx, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("bad address %s", quote(s))
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parseDNS(i *Interface, v string) error {
	for _, s := range splitList(v) {
		if !looksLikeIP(s) {
			if err := checkSearchDomain(s); err != nil {
				return err
			}
			i.DNSSearch = append(i.DNSSearch, s)
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || checkZone(a) != nil {
			return fmt.Errorf("bad DNS server address %s", quote(s))
		}
		i.DNS = append(i.DNS, a)
	}
	return nil
}

// looksLikeIP is wg-quick's test that tells DNS servers from search
// domains: digits and dots only, or any ':'.
func looksLikeIP(s string) bool {
	return strings.Contains(s, ":") || strings.Trim(s, "0123456789.") == ""
}

// checkSearchDomain accepts a DNS search domain: letters, digits and
// ".-_~" ('~' for systemd-resolved's routing domains such as "~.").
func checkSearchDomain(s string) error {
	if s == "" {
		return errors.New("empty DNS search domain")
	}
	if len(s) > maxDNSName {
		return fmt.Errorf("DNS search domain %s is longer than %d bytes", quote(s), maxDNSName)
	}
	if looksLikeIP(s) {
		return fmt.Errorf("DNS search domain %s looks like an IP address", quote(s))
	}
	for _, r := range s {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune(".-_~", r) {
			return fmt.Errorf("bad DNS search domain %s: character %q not allowed", quote(s), r)
		}
	}
	return nil
}

// parseMTU reads an MTU line. The bound that depends on the addresses
// (IPv6 needs 1280) is checked once the whole file is read, since Address
// lines may follow.
func parseMTU(i *Interface, v string) error {
	if v == "" { // wg-quick: unset, automatic
		i.MTU = 0
		return nil
	}
	lo, hi := mtuRange(nil)
	n, err := parseDecimal(v, uint64(hi))
	if err != nil || n < uint64(lo) {
		return fmt.Errorf("bad MTU %s: want %d..%d", quote(v), lo, hi)
	}
	i.MTU = int(n)
	return nil
}

func parseTable(i *Interface, v string) error {
	if err := checkTable(v); err != nil {
		return err
	}
	i.Table = v
	return nil
}

// checkTable accepts a routing table setting without whitespace or
// control characters, which neither ip(8) nor a round trip can take.
func checkTable(v string) error {
	for _, r := range v {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == '#' {
			return fmt.Errorf("bad table %s: character %q not allowed", quote(v), r)
		}
	}
	return nil
}

func parseSaveConfig(i *Interface, v string) error {
	// wg-quick compares case-insensitively (nocasematch is on).
	switch {
	case strings.EqualFold(v, "true"):
		i.SaveConfig = true
	case strings.EqualFold(v, "false"):
		i.SaveConfig = false
	default:
		return fmt.Errorf("bad boolean %s: want true or false", quote(v))
	}
	return nil
}

func parseAllowedIPs(p *Peer, v string) error {
	// wg(8) splits on commas only and rejects empty entries.
	for _, s := range strings.Split(v, ",") {
		pfx, err := parsePrefix(s)
		if err != nil {
			return err
		}
		p.AllowedIPs = append(p.AllowedIPs, pfx)
	}
	return nil
}

func parseKeepalive(p *Peer, v string) error {
	if strings.EqualFold(v, "off") {
		p.PersistentKeepalive = 0
		return nil
	}
	n, err := parseDecimal(v, 65535)
	if err != nil {
		return fmt.Errorf("bad keepalive %s: want off or 0..65535 seconds", quote(v))
	}
	p.PersistentKeepalive = time.Duration(n) * time.Second
	return nil
}

func parsePeerEndpoint(p *Peer, v string) error {
	ep, err := parseEndpoint(v)
	if err != nil {
		return err
	}
	p.Endpoint = ep
	return nil
}

// parseEndpoint splits an endpoint as wg(8) does ("[host]:port", or else
// at the last ':') and returns it in net.JoinHostPort's form. The host is
// an IP address or a host name; it is not resolved.
func parseEndpoint(v string) (string, error) {
	var host, port string
	if rest, ok := strings.CutPrefix(v, "["); ok {
		h, after, ok := strings.Cut(rest, "]")
		if !ok {
			return "", fmt.Errorf("bad endpoint %s: no matching ']'", quote(v))
		}
		pt, ok := strings.CutPrefix(after, ":")
		if !ok || pt == "" {
			return "", fmt.Errorf("bad endpoint %s: no port", quote(v))
		}
		host, port = h, pt
	} else {
		i := strings.LastIndexByte(v, ':')
		if i < 0 || i == len(v)-1 {
			return "", fmt.Errorf("bad endpoint %s: no port", quote(v))
		}
		host, port = v[:i], v[i+1:]
	}
	n, err := parseDecimal(port, 65535)
	if err != nil || n == 0 {
		return "", fmt.Errorf("bad endpoint %s: port %s is not 1..65535", quote(v), quote(port))
	}
	if err := checkEndpointHost(host); err != nil {
		return "", fmt.Errorf("bad endpoint %s: %w", quote(v), err)
	}
	return joinHostPort(host, n), nil
}

func joinHostPort(host string, port uint64) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.FormatUint(port, 10)
	}
	return host + ":" + strconv.FormatUint(port, 10)
}

// checkEndpointHost accepts an IP address (IPv6 with an optional zone)
// or a host name of letters, digits and ".-_" that is not all digits and
// dots.
func checkEndpointHost(h string) error {
	if h == "" {
		return errors.New("empty host")
	}
	if strings.Contains(h, ":") {
		a, err := netip.ParseAddr(h)
		if err != nil || checkZone(a) != nil {
			return fmt.Errorf("bad IPv6 address %s", quote(h))
		}
		return nil
	}
	if looksLikeIP(h) {
		if _, err := netip.ParseAddr(h); err != nil {
			return fmt.Errorf("bad IPv4 address %s", quote(h))
		}
		return nil
	}
	if len(h) > maxDNSName {
		return fmt.Errorf("host name %s is longer than %d bytes", quote(h), maxDNSName)
	}
	if !isName(h) {
		return fmt.Errorf("bad host name %s", quote(h))
	}
	return nil
}

// checkZone accepts an IPv6 zone that is an interface name or number of
// letters, digits and ".-_", so that it survives a round trip.
func checkZone(a netip.Addr) error {
	if z := a.Zone(); z != "" && !isName(z) {
		return fmt.Errorf("bad IPv6 zone %s", quote(z))
	}
	return nil
}

// maxDNSName is the longest DNS name in text form (RFC 1035's 255 bytes
// on the wire), the bound on host names, search domains and zones.
const maxDNSName = 253

// isName reports whether s is a non-empty string of letters, digits and
// ".-_" of at most maxDNSName bytes.
func isName(s string) bool {
	if s == "" || len(s) > maxDNSName {
		return false
	}
	for _, r := range s {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune(".-_", r) {
			return false
		}
	}
	return true
}
