//go:build !race

package e2e

// raceEnabled loosens latency bounds: the race detector costs 5-10x CPU.
const raceEnabled = false
