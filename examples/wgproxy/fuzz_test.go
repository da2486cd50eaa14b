package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseConfig feeds arbitrary files to the configuration reader: it
// must never panic; an error names the file; what it accepts has
// host:port addresses and targets, and ports 1..65535.
func FuzzParseConfig(f *testing.F) {
	f.Add("[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\n[Socks5]\nBindAddress = 127.0.0.1:1080\n")
	f.Add("WGConfig = /nonexistent\n[http]\nBindAddress = \"[::1]:80\" ; x\nUsername = u\n")
	f.Add("[TCPServerTunnel]\nListenPort = 8080\nTarget = a:1\n[UDPProxyTunnel]\nBindAddress=:53\nTarget=b:53\n[Foo]\n")
	f.Add("[Socks5\n")
	f.Fuzz(func(t *testing.T, text string) {
		if strings.Contains(strings.ToLower(text), "wgconfig") {
			return // would read other files
		}
		p := filepath.Join(t.TempDir(), "c.conf")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := parseConfig(p)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "wgproxy: ") {
				t.Fatalf("error without the program's prefix: %v", err)
			}
			return
		}
		check := func(what, a string) {
			if _, _, err := net.SplitHostPort(a); err != nil {
				t.Fatalf("accepted %s %q: %v", what, a, err)
			}
		}
		for _, s := range append(cfg.socks, cfg.http...) {
			check("bind", s.bind)
		}
		for _, fw := range cfg.forwards {
			check("bind", fw.bind)
			check("target", fw.target)
		}
		for _, r := range cfg.reverses {
			check("target", r.target)
			if r.port == 0 {
				t.Fatal("accepted port 0")
			}
		}
	})
}
