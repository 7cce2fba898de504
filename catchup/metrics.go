package catchup

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Prometheus metrics of one Catchup.
type metrics struct {
	reg             prometheus.Registerer
	collectors      []prometheus.Collector
	runs            *prometheus.CounterVec
	ops             prometheus.Counter
	bytes           prometheus.Counter
	duration        *prometheus.HistogramVec
	replicaWait     prometheus.Histogram
	replicaLag      prometheus.Counter
	retries         prometheus.Counter
	snapshotRetakes prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ripple_catchup_runs_total",
			Help: "Catch-ups run, by mode (full, resume, none when it failed before choosing) and result (ok, error).",
		}, []string{"mode", "result"}),
		ops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ripple_catchup_ops_total",
			Help: "Operations (rows and tombstone deletes) sent by catch-ups.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ripple_catchup_bytes_total",
			Help: "Encoded bytes of the rows and keys sent by catch-ups.",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ripple_catchup_duration_seconds",
			Help:    "Time a catch-up took, from request to last batch, by mode.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"mode"}),
		replicaWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ripple_catchup_replica_wait_seconds",
			Help:    "Time spent waiting for the replica to replay up to the requested LSN.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
		replicaLag: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ripple_catchup_replica_lag_total",
			Help: "Catch-ups that gave up waiting for replica replay (replica_lag).",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ripple_catchup_retries_total",
			Help: "Catch-up attempts repeated after a recovery conflict on the replica.",
		}),
		snapshotRetakes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ripple_catchup_snapshot_retakes_total",
			Help: "Snapshots taken again because they listed a committed transaction as in progress.",
		}),
	}
	m.collectors = []prometheus.Collector{m.runs, m.ops, m.bytes, m.duration, m.replicaWait,
		m.replicaLag, m.retries, m.snapshotRetakes}
	if reg == nil {
		return m, nil
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("catchup: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}

func (m *metrics) observeRun(res Result, err error, d time.Duration) {
	mode := res.Mode
	if mode == "" {
		mode = "none"
	}
	result := "ok"
	if err != nil {
		result = "error"
		if errors.Is(err, ErrReplicaLag) {
			result = "replica_lag"
		}
	}
	m.runs.WithLabelValues(mode, result).Inc()
	m.ops.Add(float64(res.Rows))
	m.bytes.Add(float64(res.Bytes))
	if err == nil {
		m.duration.WithLabelValues(mode).Observe(d.Seconds())
	}
}
