package ingest

import "github.com/prometheus/client_golang/prometheus"

// metrics are the ingest's Prometheus collectors. They are registered on
// Config.Registerer when one is given.
type metrics struct {
	commits       prometheus.Counter
	rows          prometheus.Counter
	messages      prometheus.Counter
	bytes         prometheus.Counter
	publishErrors prometheus.Counter
	resyncs       prometheus.Counter
	lagBytes      prometheus.Gauge
	lagSeconds    prometheus.Gauge
	decoded       prometheus.Gauge
	acked         prometheus.Gauge
	leader        prometheus.Gauge
	sessions      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "ripple", "ingest"
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	m := &metrics{
		commits:       counter("commits_total", "Transactions with sync-table changes published."),
		rows:          counter("rows_total", "Row operations published."),
		messages:      counter("messages_total", "NATS messages published."),
		bytes:         counter("published_bytes_total", "Payload bytes published to NATS."),
		publishErrors: counter("publish_errors_total", "NATS publish or flush errors."),
		resyncs:       counter("resyncs_total", "Resync markers published (truncate, schema change)."),
		lagBytes:      gauge("replication_lag_bytes", "Server WAL end minus the decoded-through LSN D."),
		lagSeconds:    gauge("replication_lag_seconds", "Age of the last decoded commit when it was published (0 when caught up)."),
		decoded:       gauge("decoded_lsn", "The decoded-through LSN D as a number."),
		acked:         gauge("acknowledged_lsn", "The LSN last acknowledged to Postgres as a number."),
		leader:        gauge("leader", "1 while this ingest holds the leader lock."),
		sessions:      counter("replication_sessions_total", "Replication sessions started."),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.commits, m.rows, m.messages, m.bytes, m.publishErrors,
			m.resyncs, m.lagBytes, m.lagSeconds, m.decoded, m.acked, m.leader, m.sessions} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
