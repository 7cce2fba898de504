//go:build race

package gateway

// raceEnabled slows load tests down: the race detector costs 5-10x CPU.
const raceEnabled = true
