package load

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram buckets: values below linearLimit microseconds have a bucket
// each; above, every power of two is split into subBuckets buckets, so a
// quantile is off by at most 1/subBuckets (1.6%).
const (
	subBuckets  = 64
	linearLimit = 2 * subBuckets
	maxShift    = 34 // 2^(34+7) µs is 25 days: larger values are clamped
	nBuckets    = linearLimit + maxShift*subBuckets
)

// Histogram counts durations with microsecond resolution below 128 µs and
// 1.6% relative precision above. Record is safe for concurrent use and
// lock-free; the zero value is ready.
type Histogram struct {
	counts [nBuckets]atomic.Uint64
}

func bucketOf(us uint64) int {
	if us < linearLimit {
		return int(us)
	}
	shift := bits.Len64(us) - 7 // us>>shift is in [64, 127]
	if shift > maxShift {
		return nBuckets - 1
	}
	return linearLimit + (shift-1)*subBuckets + int(us>>shift) - subBuckets
}

// bucketValue is the middle of bucket i, in microseconds.
func bucketValue(i int) float64 {
	if i < linearLimit {
		return float64(i)
	}
	shift := (i-linearLimit)/subBuckets + 1
	m := uint64((i-linearLimit)%subBuckets + subBuckets)
	lo := m << shift
	return float64(lo) + float64(uint64(1)<<shift-1)/2
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	us := int64(0)
	if d > 0 {
		us = d.Microseconds()
	}
	h.counts[bucketOf(uint64(us))].Add(1)
}

// Snapshot returns the current counts.
func (h *Histogram) Snapshot() HistSnapshot {
	var s HistSnapshot
	s.Counts = make([]uint64, nBuckets)
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	return s
}

// HistSnapshot is a copy of a Histogram's counts. Subtract two snapshots to
// get the durations recorded in between.
type HistSnapshot struct {
	Counts []uint64 `json:"counts"`
}

// Sub returns s minus an earlier snapshot of the same histogram.
func (s HistSnapshot) Sub(earlier HistSnapshot) HistSnapshot {
	out := HistSnapshot{Counts: make([]uint64, len(s.Counts))}
	for i, c := range s.Counts {
		if i < len(earlier.Counts) {
			c -= earlier.Counts[i]
		}
		out.Counts[i] = c
	}
	return out
}

// Total is the number of recorded durations.
func (s HistSnapshot) Total() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Quantile returns the q-quantile (0 < q <= 1) in milliseconds, or 0 when
// nothing was recorded.
func (s HistSnapshot) Quantile(q float64) float64 {
	total := s.Total()
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > total {
		rank = total
	}
	var seen uint64
	for i, c := range s.Counts {
		seen += c
		if seen >= rank {
			return bucketValue(i) / 1000
		}
	}
	return bucketValue(len(s.Counts)-1) / 1000
}

// Max returns the largest recorded bucket's value in milliseconds.
func (s HistSnapshot) Max() float64 {
	for i := len(s.Counts) - 1; i >= 0; i-- {
		if s.Counts[i] > 0 {
			return bucketValue(i) / 1000
		}
	}
	return 0
}
