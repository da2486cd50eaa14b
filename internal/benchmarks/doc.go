// Package benchmarks compares wgkit's backends with stock wireguard-go in
// the same `go test -bench` run. It holds no code of its own: every
// benchmark has an impl=stock and an impl=wgkit sub-benchmark, so that
// benchstat shows the ratio between them. See BENCHMARKS.md at the
// repository root for how to run them and for recorded results.
package benchmarks
