// Package metrics defines the subscriber's Prometheus collectors, registered
// on a registry the caller owns (never the global default one).
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the subscriber's collectors.
type Metrics struct {
	Received          *prometheus.CounterVec // by qos
	Stored            prometheus.Counter
	CommitSeconds     prometheus.Histogram
	BatchSize         prometheus.Histogram
	Redeliveries      prometheus.Counter // arrivals with the DUP flag
	DuplicatesDropped prometheus.Counter // redeliveries acknowledged without storing
	DuplicatesStored  prometheus.Counter // stored with duplicate: true
	Connected         prometheus.Gauge
	Subscribed        prometheus.Gauge
	// ShareGroupUnsupported is 1 while a member's probe of its share
	// group has not come back within its timeout.
	ShareGroupUnsupported prometheus.Gauge
	StoreErrors           prometheus.Counter
	QueueDepth            prometheus.Gauge
	RetentionDeleted      prometheus.Counter
	RefusedWhileStopped   prometheus.Counter
}

// New registers the collectors, plus the Go and process collectors, on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "subscriber_messages_received_total",
			Help: "Messages that arrived from the broker, by QoS.",
		}, []string{"qos"}),
		Stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "subscriber_messages_stored_total",
			Help: "Messages committed to the store.",
		}),
		CommitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "subscriber_commit_duration_seconds",
			Help:    "Time to commit one batch to the store.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "subscriber_batch_size",
			Help:    "Messages per committed batch.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000},
		}),
		Redeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "subscriber_redeliveries_total",
			Help: "Arrivals carrying the DUP flag (a redelivery by the broker).",
		}),
		DuplicatesDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "subscriber_duplicates_dropped_total",
			Help: "Redeliveries of already stored messages, acknowledged and not stored again.",
		}),
		DuplicatesStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "subscriber_duplicates_stored_total",
			Help: "Redeliveries stored with duplicate=true because they could not be told from new messages.",
		}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "subscriber_mqtt_connected",
			Help: "1 while connected to the broker.",
		}),
		Subscribed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "subscriber_mqtt_subscribed",
			Help: "1 while every subscription is acknowledged.",
		}),
		ShareGroupUnsupported: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "subscriber_share_group_unsupported",
			Help: "1 while MQTT_SHARE_GROUP is set and the broker did not deliver the group's probe in time: it does not honour shared subscriptions.",
		}),
		StoreErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "subscriber_store_errors_total",
			Help: "Failed store operations (each retried commit counts).",
		}),
		QueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "subscriber_queue_depth",
			Help: "Arrivals waiting for the writer.",
		}),
		RetentionDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "subscriber_retention_deleted_total",
			Help: "Rows deleted because they were older than RETENTION.",
		}),
		RefusedWhileStopped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "subscriber_messages_refused_total",
			Help: "Arrivals left unacknowledged during shutdown (the broker redelivers QoS 1 and 2).",
		}),
	}
	reg.MustRegister(m.Received, m.Stored, m.CommitSeconds, m.BatchSize, m.Redeliveries,
		m.DuplicatesDropped, m.DuplicatesStored, m.Connected, m.Subscribed, m.ShareGroupUnsupported, m.StoreErrors,
		m.QueueDepth, m.RetentionDeleted, m.RefusedWhileStopped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, q := range []string{"0", "1", "2"} {
		m.Received.WithLabelValues(q)
	}
	return m
}
