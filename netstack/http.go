package netstack

import (
	"net/http"
	"time"
)

// HTTPClient returns an HTTP client whose connections all go through the
// tunnel: it dials with DialContext (so host names are resolved by the
// tunnel's DNS) and uses no proxy, whatever the environment says. It is
// the same client on every call, safe for concurrent use, and its idle
// connections are closed by Close.
func (n *Net) HTTPClient() *http.Client { return n.client }

func (n *Net) newHTTPClient() *http.Client {
	// The settings of http.DefaultTransport, minus Proxy.
	return &http.Client{Transport: &http.Transport{
		DialContext:           n.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
	}}
}
