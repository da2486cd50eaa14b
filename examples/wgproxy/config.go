package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/wgkit/wgkit/wg"
)

// config is what wgproxy serves: the tunnel and the proxies and forwards
// on it.
type config struct {
	wg       *wg.Config
	socks    []server  // [Socks5] sections, -socks
	http     []server  // [http] sections, -http
	forwards []forward // [TCPClientTunnel], [UDPProxyTunnel], -forward
	reverses []reverse // [TCPServerTunnel], -reverse
	warnings []string  // what was ignored, to log
}

// server is a SOCKS5 or HTTP proxy listening on the host.
type server struct {
	bind, user, pass string
}

// forward listens on the host at bind and dials target through the
// tunnel.
type forward struct {
	proto, bind, target string
}

// reverse listens on the tunnel at port and dials target on the host.
type reverse struct {
	proto  string
	port   uint16
	target string
}

// servicesText describes the proxies and forwards, so that a reload can
// tell whether they changed (SIGHUP applies only the tunnel part).
func (c *config) servicesText() string {
	return fmt.Sprint(c.socks, c.http, c.forwards, c.reverses)
}

// configError names the file and line of a problem, in the form of the
// wg-quick parser's errors.
type configError struct {
	file string
	line int
	err  error
}

func (e *configError) Error() string {
	return fmt.Sprintf("wgproxy: %s line %d: %v", e.file, e.line, e.err)
}

func (e *configError) Unwrap() error { return e.err }

// wireproxy's sections, lower case, as its INI reader (go-ini with
// Insensitive) matches them.
const (
	secSocks5    = "socks5"
	secHTTP      = "http"
	secTCPClient = "tcpclienttunnel"
	secTCPServer = "tcpservertunnel"
	secUDPProxy  = "udpproxytunnel"
	secSTDIO     = "stdiotunnel"
)

// section is one wireproxy section as read: its keys, lower case, with
// the line of each.
type section struct {
	name string
	line int
	keys map[string]value
}

type value struct {
	text string
	line int
}

// parseConfig reads a wg-quick file that may also carry wireproxy's
// sections, read as wireproxy reads them: section and key names in any
// case; '#' and ';' start comments, also after a value unless it is
// quoted ("...", '...' or `...`, quotes removed); a key outside any
// section (WGConfig) is in the root section; repeated sections are each
// served. WGConfig = path names a separate wg-quick file for the tunnel
// (relative to the working directory, as wireproxy has it); the file's own
// [Interface] and [Peer], if any, are then ignored. The wg-quick part is
// read by wg.ParseConfig; the lines of the other sections are blanked out
// for it, so its errors name the file's own line numbers. wireproxy's
// CheckAlive and CheckAliveInterval in [Interface] are ignored with a
// warning, as is [STDIOTunnel].
func parseConfig(path string) (*config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wgproxy: %w", err)
	}
	defer f.Close()
	var (
		wgText   strings.Builder // the wg-quick lines; others blank
		sections []section
		cur      *section // nil in the wg-quick part
		root     = map[string]value{}
		inRoot   = true
		c        = &config{}
		lineNo   int
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		lineNo++
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			wgText.WriteString(raw)
		case line[0] == '[':
			inRoot = false
			end := strings.IndexByte(line, ']')
			if end < 0 {
				return nil, &configError{path, lineNo, fmt.Errorf("section header %q lacks ']'", truncate(line))}
			}
			name := strings.ToLower(strings.TrimSpace(line[1:end]))
			switch name {
			case "interface", "peer":
				cur = nil
				wgText.WriteString(raw)
			case secSocks5, secHTTP, secTCPClient, secTCPServer, secUDPProxy, secSTDIO:
				sections = append(sections, section{name: name, line: lineNo, keys: map[string]value{}})
				cur = &sections[len(sections)-1]
			default:
				// wireproxy's reader takes any section and ignores
				// those it does not know; wg.ParseConfig would not.
				sections = append(sections, section{name: name, line: lineNo, keys: map[string]value{}})
				cur = &sections[len(sections)-1]
			}
		case inRoot || cur != nil:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return nil, &configError{path, lineNo, fmt.Errorf("want \"Key = Value\", got %q", truncate(line))}
			}
			key := strings.ToLower(strings.TrimSpace(k))
			val := iniValue(strings.TrimSpace(v))
			if inRoot {
				root[key] = value{val, lineNo}
			} else {
				cur.keys[key] = value{val, lineNo}
			}
		default:
			// [Interface] and [Peer]: wg.ParseConfig's, but for
			// wireproxy's own keys there.
			k, _, _ := strings.Cut(line, "=")
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "checkalive", "checkaliveinterval":
				c.warnings = append(c.warnings, fmt.Sprintf("%s line %d: wireproxy's %s is not supported; ignored", path, lineNo, strings.TrimSpace(k)))
			default:
				wgText.WriteString(raw)
			}
		}
		wgText.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("wgproxy: read %s: %w", path, err)
	}
	wgFile, wgSrc := path, wgText.String()
	for k, v := range root {
		if k != "wgconfig" {
			c.warnings = append(c.warnings, fmt.Sprintf("%s line %d: unknown key %q outside a section; ignored", path, v.line, k))
			continue
		}
		b, err := os.ReadFile(v.text)
		if err != nil {
			return nil, &configError{path, v.line, fmt.Errorf("WGConfig: %w", err)}
		}
		wgFile, wgSrc = v.text, string(b)
	}
	if c.wg, err = wg.ParseConfig(strings.NewReader(wgSrc)); err != nil {
		var cerr *wg.ConfigError
		if errors.As(err, &cerr) {
			return nil, &configError{wgFile, cerr.Line, cerr.Err}
		}
		return nil, fmt.Errorf("wgproxy: %s: %w", wgFile, err)
	}
	for _, s := range sections {
		if err := c.addSection(path, s); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// addSection checks one wireproxy section and adds what it asks for.
func (c *config) addSection(path string, s section) error {
	lineErr := func(key string, err error) error {
		line := s.line
		if v, ok := s.keys[key]; ok {
			line = v.line
		}
		return &configError{path, line, err}
	}
	// need returns a key's value, which must be there and not empty.
	need := func(key, name string) (string, error) {
		v, ok := s.keys[key]
		if !ok || v.text == "" {
			return "", lineErr(key, fmt.Errorf("[%s] needs %s", s.name, name))
		}
		return v.text, nil
	}
	hostPort := func(key, name string) (string, error) {
		v, err := need(key, name)
		if err != nil {
			return "", err
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			return "", lineErr(key, fmt.Errorf("%s: want host:port: %w", name, err))
		}
		return v, nil
	}
	var known []string
	switch s.name {
	case secSocks5, secHTTP:
		known = []string{"bindaddress", "username", "password"}
		bind, err := hostPort("bindaddress", "BindAddress")
		if err != nil {
			return err
		}
		srv := server{bind: bind, user: s.keys["username"].text, pass: s.keys["password"].text}
		if s.name == secSocks5 {
			c.socks = append(c.socks, srv)
		} else {
			c.http = append(c.http, srv)
		}
	case secTCPClient, secUDPProxy:
		known = []string{"bindaddress", "target"}
		bind, err := hostPort("bindaddress", "BindAddress")
		if err != nil {
			return err
		}
		target, err := hostPort("target", "Target")
		if err != nil {
			return err
		}
		proto := "tcp"
		if s.name == secUDPProxy {
			proto = "udp"
		}
		c.forwards = append(c.forwards, forward{proto, bind, target})
	case secTCPServer:
		known = []string{"listenport", "target"}
		p, err := need("listenport", "ListenPort")
		if err != nil {
			return err
		}
		port, err := parsePort(p)
		if err != nil {
			return lineErr("listenport", fmt.Errorf("ListenPort: %w", err))
		}
		target, err := hostPort("target", "Target")
		if err != nil {
			return err
		}
		c.reverses = append(c.reverses, reverse{"tcp", port, target})
	case secSTDIO:
		c.warnings = append(c.warnings, fmt.Sprintf("%s line %d: [STDIOTunnel] is not supported; ignored", path, s.line))
		return nil
	default:
		c.warnings = append(c.warnings, fmt.Sprintf("%s line %d: unknown section [%s]; ignored", path, s.line, s.name))
		return nil
	}
	for k, v := range s.keys {
		if !contains(known, k) {
			c.warnings = append(c.warnings, fmt.Sprintf("%s line %d: unknown key %q in [%s]; ignored", path, v.line, k, s.name))
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// parsePort parses a port number 1..65535.
func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("want a port number 1..65535, got %q", truncate(s))
	}
	return uint16(p), nil
}

// iniValue is a value as go-ini reads it: quotes removed from a quoted
// value, otherwise cut at the first '#' or ';' (an inline comment).
func iniValue(v string) string {
	if len(v) >= 2 {
		switch q := v[0]; q {
		case '"', '\'', '`':
			if end := strings.IndexByte(v[1:], q); end >= 0 {
				return v[1 : 1+end]
			}
		}
	}
	if i := strings.IndexAny(v, "#;"); i >= 0 {
		v = strings.TrimSpace(v[:i])
	}
	return v
}

// parseFlagForward parses -forward's "tcp:127.0.0.1:2222=10.0.0.5:22".
func parseFlagForward(s string) (forward, error) {
	proto, rest, ok := strings.Cut(s, ":")
	bind, target, ok2 := strings.Cut(rest, "=")
	if !ok || !ok2 || (proto != "tcp" && proto != "udp") {
		return forward{}, fmt.Errorf("-forward %q: want tcp:BIND=TARGET or udp:BIND=TARGET", truncate(s))
	}
	for _, a := range []string{bind, target} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return forward{}, fmt.Errorf("-forward %q: %w", truncate(s), err)
		}
	}
	return forward{proto, bind, target}, nil
}

// parseFlagReverse parses -reverse's "tcp:8080=127.0.0.1:80".
func parseFlagReverse(s string) (reverse, error) {
	proto, rest, ok := strings.Cut(s, ":")
	p, target, ok2 := strings.Cut(rest, "=")
	if !ok || !ok2 || (proto != "tcp" && proto != "udp") {
		return reverse{}, fmt.Errorf("-reverse %q: want tcp:PORT=TARGET or udp:PORT=TARGET", truncate(s))
	}
	port, err := parsePort(p)
	if err != nil {
		return reverse{}, fmt.Errorf("-reverse %q: %w", truncate(s), err)
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		return reverse{}, fmt.Errorf("-reverse %q: %w", truncate(s), err)
	}
	return reverse{proto, port, target}, nil
}

// truncate cuts s to a short prefix for error messages.
func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
