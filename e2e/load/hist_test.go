package load

import (
	"math"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	// Every bucket's middle maps back to the bucket, and buckets are ordered.
	prev := -1.0
	for i := 0; i < nBuckets; i++ {
		v := bucketValue(i)
		if v <= prev {
			t.Fatalf("bucket %d value %v not above %v", i, v, prev)
		}
		prev = v
		if got := bucketOf(uint64(v)); got != i {
			t.Fatalf("bucketOf(bucketValue(%d)=%v) = %d", i, v, got)
		}
	}
	if got := bucketOf(math.MaxUint64); got != nBuckets-1 {
		t.Fatalf("huge value in bucket %d", got)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name   string
		values []time.Duration
		q      float64
		want   float64 // ms
	}{
		{"empty", nil, 0.5, 0},
		{"one", []time.Duration{3 * time.Millisecond}, 0.99, 3},
		{"negative is zero", []time.Duration{-time.Second}, 0.5, 0},
		{"sub-ms exact", []time.Duration{100 * time.Microsecond, 50 * time.Microsecond}, 1, 0.1},
		{"median of 1..100 ms", ramp(100, time.Millisecond), 0.5, 50},
		{"p99 of 1..1000 ms", ramp(1000, time.Millisecond), 0.99, 990},
		{"p50 of 1..1000 us", ramp(1000, time.Microsecond), 0.5, 0.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h Histogram
			for _, v := range tc.values {
				h.Record(v)
			}
			s := h.Snapshot()
			if s.Total() != uint64(len(tc.values)) {
				t.Fatalf("total %d, want %d", s.Total(), len(tc.values))
			}
			got := s.Quantile(tc.q)
			if math.Abs(got-tc.want) > tc.want*0.016+0.001 {
				t.Fatalf("quantile %v = %v ms, want %v ms (±1.6%%)", tc.q, got, tc.want)
			}
		})
	}
}

func TestHistogramSub(t *testing.T) {
	var h Histogram
	for _, v := range ramp(10, time.Second) { // 1..10 s
		h.Record(v)
	}
	before := h.Snapshot()
	for i := 0; i < 5; i++ {
		h.Record(2 * time.Millisecond)
	}
	diff := h.Snapshot().Sub(before)
	if diff.Total() != 5 {
		t.Fatalf("diff total %d, want 5", diff.Total())
	}
	if got := diff.Max(); math.Abs(got-2) > 0.04 {
		t.Fatalf("diff max %v ms, want 2", got)
	}
	if got := before.Max(); math.Abs(got-10000) > 160 {
		t.Fatalf("max %v ms, want 10000", got)
	}
}

func ramp(n int, unit time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * unit
	}
	return out
}
