// Package load is Ripple's gateway load generator and benchmark harness.
//
// The generator (Generator, started by Start) opens many WebSocket
// connections to a gateway and speaks the client protocol of
// docs/protocol.md directly: auth, one subscription per connection, then it
// only reads. Each connection is set up with blocking I/O by a goroutine of
// its own (its own minimal WebSocket client, raw_linux.go, whose frame parser
// is fuzzed) and then read by one of GOMAXPROCS epoll loops, so that reading
// costs about one system call per delivery and no goroutine scheduling: on a
// 2-core machine the generator must leave the gateway as much CPU as it can.
// (Outside Linux, and in ModeEcho, connections use gorilla/websocket, one
// goroutine each.) For
// every commit frame it records the latency between the commit timestamp the
// frame carries (the Postgres commit time) and the moment the frame was read,
// in a lock-free Histogram. Connections are spread over several loopback
// source addresses (127.0.0.2, 127.0.0.3, ...) so that tens of thousands of
// them, and back-to-back runs, do not exhaust the ephemeral ports of one
// address. In ModeEcho it only holds idle connections to a plain echo server
// (e2e/cmd/bare-ws), the baseline for memory per connection.
//
// Snapshot measures one full snapshot of a subscription: rows per second from
// the subscribe frame to ready.
//
// CommitWriter produces the load: transactions that update or insert rows of
// a sync table spread over organisations, paced at a fixed rate by a ticker
// (or as fast as possible), for a fixed duration.
//
// ProcStat and ProcRSS read a process's CPU time and resident memory from
// /proc, so a benchmark can charge CPU seconds and memory to the gateway
// process alone.
//
// The benchmarks (bench_test.go) run the whole topology as separate
// processes — Postgres, NATS and the ingest, the gateway (`ripple gateway`),
// and the load generator (e2e/cmd/ripple-load) — and report their figures
// with testing.B.ReportMetric. They are heavy and run only with -bench:
//
//	RIPPLE_BENCH=1 go test -run '^$' -bench . -benchtime 1x -timeout 60m ./e2e/load/
//
// Sizes can be lowered for development with RIPPLE_LOAD_CLIENTS,
// RIPPLE_LOAD_ORGS, RIPPLE_LOAD_SECONDS and RIPPLE_SNAPSHOT_ROWS.
package load
