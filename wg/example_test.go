package wg_test

import (
	"fmt"
	"log"
	"strings"

	"github.com/wgkit/wgkit/wg"
)

func ExampleParseConfig() {
	const conf = `
[Interface]
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
Address = 10.0.0.2/24, fd00::2/64
DNS = 10.0.0.1, corp.example

[Peer]
PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
Endpoint = vpn.example.com:51820
AllowedIPs = 0.0.0.0/0, ::/0
PersistentKeepalive = 25
`
	cfg, err := wg.ParseConfig(strings.NewReader(conf))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cfg.Interface.Addresses, cfg.Interface.DNS, cfg.Interface.DNSSearch)
	p := cfg.Peers[0]
	fmt.Println(p.Endpoint, p.AllowedIPs, p.PersistentKeepalive)
	// Output:
	// [10.0.0.2/24 fd00::2/64] [10.0.0.1] [corp.example]
	// vpn.example.com:51820 [0.0.0.0/0 ::/0] 25s
}

func ExampleParseConfig_error() {
	_, err := wg.ParseConfig(strings.NewReader("[Interface]\nPrivateKey = nope\n"))
	fmt.Println(err)
	// Output:
	// wg: parse config line 2: PrivateKey: invalid key: want 44 base64 characters, got 4
}

func ExampleKey_PublicKey() {
	priv, err := wg.ParseKey("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(priv.PublicKey())
	// Output:
	// HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=
}

func ExampleConfig_MarshalText() {
	priv, _ := wg.ParseKey("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=")
	peer, _ := wg.ParseKey("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")
	cfg := &wg.Config{
		Interface: wg.Interface{PrivateKey: priv, ListenPort: 51820},
		Peers:     []wg.Peer{{PublicKey: peer, Endpoint: "192.0.2.1:51820"}},
	}
	text, err := cfg.MarshalText()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(text))
	// Output:
	// [Interface]
	// PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
	// ListenPort = 51820
	//
	// [Peer]
	// PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
	// Endpoint = 192.0.2.1:51820
}
