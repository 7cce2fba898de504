package gateway

import "github.com/prometheus/client_golang/prometheus"

// metrics are the gateway's Prometheus collectors.
type metrics struct {
	clients       prometheus.Gauge
	subscriptions prometheus.Gauge
	topics        prometheus.Gauge
	messagesOut   prometheus.Counter
	bytesOut      prometheus.Counter
	writes        prometheus.Counter
	handoffs      prometheus.Counter
	queueDrops    prometheus.Counter
	cutClients    *prometheus.CounterVec
	resyncs       *prometheus.CounterVec
	catchups      *prometheus.CounterVec
	mutations     *prometheus.CounterVec
	latency       prometheus.Histogram
	natsIn        prometheus.Counter
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		clients:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "ripple_gateway_clients", Help: "Open WebSocket connections."}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ripple_gateway_subscriptions", Help: "Active subscriptions."}),
		topics:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "ripple_gateway_topics", Help: "NATS data subjects subscribed."}),
		messagesOut:   prometheus.NewCounter(prometheus.CounterOpts{Name: "ripple_gateway_messages_out_total", Help: "Frames written to clients."}),
		bytesOut:      prometheus.NewCounter(prometheus.CounterOpts{Name: "ripple_gateway_bytes_out_total", Help: "Bytes of frames written to clients."}),
		writes:        prometheus.NewCounter(prometheus.CounterOpts{Name: "ripple_gateway_socket_writes_total", Help: "Socket write system calls carrying frames to clients (messages_out / socket_writes is the frames per write)."}),
		handoffs:      prometheus.NewCounter(prometheus.CounterOpts{Name: "ripple_gateway_socket_full_total", Help: "Writes a flusher handed to the connection's own blocking writer because its socket was full (slow readers)."}),
		queueDrops:    prometheus.NewCounter(prometheus.CounterOpts{Name: "ripple_gateway_queue_drops_total", Help: "Frames dropped because a connection's outbound queue was full."}),
		cutClients:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ripple_gateway_cut_clients_total", Help: "Connections closed by the gateway, by error code."}, []string{"code"}),
		resyncs:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ripple_gateway_resyncs_total", Help: "Subscriptions told to resynchronise, by reason."}, []string{"reason"}),
		catchups:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ripple_gateway_catchups_total", Help: "Catch-ups finished, by result."}, []string{"result"}),
		mutations:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ripple_gateway_mutations_total", Help: "Mutations forwarded to writers, by status."}, []string{"status"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ripple_gateway_commit_to_send_seconds",
			Help:    "Time from a transaction's commit to its commit frame being queued for a client.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5}}),
		natsIn: prometheus.NewCounter(prometheus.CounterOpts{Name: "ripple_gateway_nats_messages_total", Help: "NATS messages received."}),
	}
	if r != nil {
		for _, c := range []prometheus.Collector{m.clients, m.subscriptions, m.topics, m.messagesOut, m.bytesOut, m.writes, m.handoffs,
			m.queueDrops, m.cutClients, m.resyncs, m.catchups, m.mutations, m.latency, m.natsIn} {
			if err := r.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
