package push

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts, per vendor, what the pusher did. It is a
// prometheus.Collector for /metrics.
type Metrics struct {
	mu      sync.RWMutex
	vendors map[string]*VendorCounts
	queued  atomic.Int64
}

// VendorCounts are one vendor's counters.
type VendorCounts struct {
	sent, failed, retried, removed, cancelled, configErrors atomic.Int64
	stopped                                                 atomic.Bool
}

// Sent, Failed, Retried, TokensRemoved and Cancelled read the counters.
func (c *VendorCounts) Sent() int64          { return c.sent.Load() }
func (c *VendorCounts) Failed() int64        { return c.failed.Load() }
func (c *VendorCounts) Retried() int64       { return c.retried.Load() }
func (c *VendorCounts) TokensRemoved() int64 { return c.removed.Load() }
func (c *VendorCounts) Cancelled() int64     { return c.cancelled.Load() }

// Stopped reports whether the vendor was stopped for a configuration error.
func (c *VendorCounts) Stopped() bool { return c.stopped.Load() }

// ConfigErrors counts answers that blame Duet's settings, not the token
// (APNs BadDeviceToken / DeviceTokenNotForTopic, FCM SENDER_ID_MISMATCH).
func (c *VendorCounts) ConfigErrors() int64 { return c.configErrors.Load() }

func newMetrics() *Metrics { return &Metrics{vendors: map[string]*VendorCounts{}} }

// vendor returns name's counters, creating them.
func (m *Metrics) vendor(name string) *VendorCounts {
	m.mu.RLock()
	c := m.vendors[name]
	m.mu.RUnlock()
	if c != nil {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c = m.vendors[name]; c == nil {
		c = &VendorCounts{}
		m.vendors[name] = c
	}
	return c
}

// Vendor returns the counters of one vendor (zero for an unknown one).
func (m *Metrics) Vendor(name string) *VendorCounts { return m.vendor(name) }

var (
	descSent      = prometheus.NewDesc("duet_push_sent_total", "Notifications a push vendor accepted.", []string{"vendor"}, nil)
	descFailed    = prometheus.NewDesc("duet_push_failed_total", "Notifications given up: refused, invalid token, or out of retries.", []string{"vendor"}, nil)
	descRetried   = prometheus.NewDesc("duet_push_retried_total", "Sends retried after 429, 5xx, network or TLS errors.", []string{"vendor"}, nil)
	descRemoved   = prometheus.NewDesc("duet_push_tokens_removed_total", "Device tokens removed because the vendor called them invalid.", []string{"vendor"}, nil)
	descCancelled = prometheus.NewDesc("duet_push_cancelled_total", "Pushes dropped because the device came back within the grace.", []string{"vendor"}, nil)
	descConfig    = prometheus.NewDesc("duet_push_config_errors_total", "Vendor answers that blame the push config (environment, bundle id, sender), not the token.", []string{"vendor"}, nil)
	descStopped   = prometheus.NewDesc("duet_push_vendor_stopped", "1 while a vendor is stopped for a configuration error (until restart).", []string{"vendor"}, nil)
	descQueued    = prometheus.NewDesc("duet_push_queued", "Notifications queued or being sent.", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSent, descFailed, descRetried, descRemoved, descCancelled, descConfig, descStopped, descQueued} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.RLock()
	names := make([]string, 0, len(m.vendors))
	for n := range m.vendors {
		names = append(names, n)
	}
	m.mu.RUnlock()
	sort.Strings(names)
	for _, n := range names {
		c := m.vendor(n)
		ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(c.sent.Load()), n)
		ch <- prometheus.MustNewConstMetric(descFailed, prometheus.CounterValue, float64(c.failed.Load()), n)
		ch <- prometheus.MustNewConstMetric(descRetried, prometheus.CounterValue, float64(c.retried.Load()), n)
		ch <- prometheus.MustNewConstMetric(descRemoved, prometheus.CounterValue, float64(c.removed.Load()), n)
		ch <- prometheus.MustNewConstMetric(descCancelled, prometheus.CounterValue, float64(c.cancelled.Load()), n)
		ch <- prometheus.MustNewConstMetric(descConfig, prometheus.CounterValue, float64(c.configErrors.Load()), n)
		stopped := 0.0
		if c.stopped.Load() {
			stopped = 1
		}
		ch <- prometheus.MustNewConstMetric(descStopped, prometheus.GaugeValue, stopped, n)
	}
	ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(m.queued.Load()))
}
