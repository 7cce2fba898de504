package writer

import "github.com/prometheus/client_golang/prometheus"

// metrics are the writer's Prometheus collectors. They are registered with
// Config.Registerer when one is set, and otherwise only counted.
type metrics struct {
	mutations *prometheus.CounterVec
	duration  prometheus.Histogram
	retries   prometheus.Counter
	replays   prometheus.Counter
	inflight  prometheus.Gauge
	batch     prometheus.Histogram
	fallbacks prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		mutations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ripple", Subsystem: "writer", Name: "mutations_total",
			Help: "Mutation requests answered, by status and rejection code.",
		}, []string{"status", "code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "ripple", Subsystem: "writer", Name: "mutation_duration_seconds",
			Help:    "Time from receiving a mutation request to sending its reply.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ripple", Subsystem: "writer", Name: "transaction_retries_total",
			Help: "Transactions run again after a serialization failure or deadlock.",
		}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ripple", Subsystem: "writer", Name: "replays_total",
			Help: "Requests for already recorded mutations, answered from the record.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ripple", Subsystem: "writer", Name: "inflight",
			Help: "Mutation requests accepted and not answered yet (waiting for their batch or executing).",
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "ripple", Subsystem: "writer", Name: "batch_size",
			Help:    "Mutations applied together in one transaction (group commit).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ripple", Subsystem: "writer", Name: "batch_fallbacks_total",
			Help: "Batches whose transaction failed as a whole and whose mutations were run one by one.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.mutations, m.duration, m.retries, m.replays, m.inflight, m.batch, m.fallbacks} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
