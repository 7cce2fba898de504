// Package testenv gives Ripple's tests a throwaway environment of real
// servers: PostgreSQL 15 primaries and streaming replicas, embedded NATS
// servers (standalone, clustered, or a two-cluster super-cluster joined by
// gateways) and child processes that can be killed for real.
//
// PostgreSQL: initdb runs once per test binary into a template data
// directory; every cluster is a copy of it (cp -a), started directly from Go
// on 127.0.0.1 and a free port, trust authentication, wal_level=logical,
// fsync=off. Everything lives under BaseDir() (/dev/shm/ripple-testenv, or
// /tmp/ripple-testenv, or $RIPPLE_TESTENV_DIR), one directory per test
// binary; the initdb template is shared by all test binaries. As root the servers run as the postgres OS user.
// Servers get SIGKILL if the test binary dies. On a failed test the tail of the
// server log is logged.
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
//
//	func TestX(t *testing.T) {
//		pg := testenv.SharedPostgres(t)   // one primary per test binary
//		url := pg.CreateDatabase(t)       // a fresh database for this test
//		nc := testenv.StartNATS(t)        // embedded nats-server
//		...
//	}
//
// Use StartPostgres for a private primary a test may Stop, Kill, Start, or
// replicate with StartReplica (PauseReplay/ResumeReplay/WaitReplayed).
//
// Components that must die for real (SIGKILL) run as child processes: re-exec
// the test binary with SelfCommand and start it with StartProcess; in TestMain
// dispatch on Role().
//
// Every readiness wait polls a condition with a deadline; nothing sleeps
// blindly.
package testenv
