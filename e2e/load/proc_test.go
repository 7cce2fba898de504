package load

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"plain", "1234 (ripple) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 1 0 0", 3250 * time.Millisecond, false},
		{"name with spaces and parens", "7 (a b) c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0", 30 * time.Millisecond, false},
		{"no parens", "1234 ripple S 1", 0, true},
		{"short", "1 (x) S 1 2", 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u 2", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseStatusRSS(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{"status", "Name:\tripple\nVmPeak:\t  9999 kB\nVmRSS:\t   20480 kB\nThreads: 8\n", 20480 * 1024, false},
		{"missing", "Name:\tx\n", 0, true},
		{"bad unit", "VmRSS:\t 5 MB\n", 0, true},
		{"bad number", "VmRSS:\t x kB\n", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatusRSS([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestProcOfSelf(t *testing.T) {
	pid := os.Getpid()
	rss, err := ProcRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 {
		t.Fatalf("own RSS %d bytes, implausibly small", rss)
	}
	// Burn CPU until the kernel's tick-based accounting moves.
	c0, err := ProcCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	x := 0
	for {
		for i := 0; i < 1e6; i++ {
			x += i
		}
		c1, err := ProcCPU(pid)
		if err != nil {
			t.Fatal(err)
		}
		if c1 > c0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time did not move from %v in 10s of spinning (%d)", c0, x)
		}
	}
	if _, err := ProcCPU(1 << 30); err == nil {
		t.Fatal("no error for a pid that does not exist")
	}
}
