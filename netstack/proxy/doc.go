// Package proxy serves a tunnel to the programs beside the one that opened
// it: a SOCKS5 server ([NewSOCKS5]), an HTTP proxy ([HTTPHandler]) and
// port forwards in either direction ([ForwardTCP], [ForwardUDP]), each a
// library call over any [Network], of which [*netstack.Net] is the one
// that matters.
//
// # Names and leaks
//
// Every name a client asks for (a SOCKS5 domain name, an HTTP request's
// host) is resolved by the tunnel's DNS servers, through the Network's
// DialContext and LookupHost, never by the host's resolver: SOCKS5 clients
// get socks5h semantics whatever they ask, and a program that sends its
// names to the proxy leaks no DNS query to the host's network.
//
// # Bounds
//
// Every server bounds what a client can hold: a deadline on the SOCKS5
// handshake (10 s by default), a deadline on each dial through the tunnel
// (30 s), and a cap on concurrent connections (1024), past which new
// connections are closed at once. Every refused or failed request is one
// line on the server's *slog.Logger (nil: discarded). Close ends every
// goroutine and connection a server started.
//
// # Half-close
//
// Joined connections pass a half-close on: when one side sends its end of
// stream, the other side's write half is shut (CloseWrite) and the reply
// still flows back, as HTTP/1.0 clients, rsync and `nc -N` need.
//
// Out of scope: SOCKS4, the SOCKS5 BIND command (answered "command not
// supported"), GSSAPI authentication, and SOCKS5 UDP fragmentation
// (fragments are dropped, as RFC 1928 allows).
package proxy
