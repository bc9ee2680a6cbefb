package main

import (
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// routes is the HTTP surface: health and metrics (REST comes under /v4/).
func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}`))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics(), promhttp.HandlerOpts{}))
	// Profiles for operators, on this machine only: the listener is public
	// wherever devices fetch media (the Docker image binds 0.0.0.0), and a
	// heap profile shows the UserSig key and message text.
	mux.Handle("GET /debug/pprof/", loopbackOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/profile", loopbackOnly(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/v4/", s.rest)
	mux.Handle("/media/", s.media.Handler())
	if s.web != nil {
		mux.Handle("/", s.web) // the web chat (web/, docs/web.md)
	}
	return mux
}

// metrics exposes the counters the store and the broker keep.
func (s *server) metrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s.push != nil {
		reg.MustRegister(s.push.Metrics())
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "duet", Name: name, Help: help}, f))
	}
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "duet", Name: name, Help: help}, f))
	}
	sm, dm := &s.store.Metrics, &s.broker.Devices.Metrics
	counter("store_commits_total", "Fsynced store commits (group commits).", func() float64 { return float64(sm.Commits.Load()) })
	counter("store_transactions_total", "Transactions carried by those commits.", func() float64 { return float64(sm.Txns.Load()) })
	counter("store_commit_seconds_total", "Time spent committing.", func() float64 { return float64(sm.CommitMicros.Load()) / 1e6 })
	counter("delivered_events_total", "Timeline events written to devices.", func() float64 { return float64(dm.Delivered.Load()) })
	counter("acked_events_total", "Timeline events PUBACKed by devices.", func() float64 { return float64(dm.Acked.Load()) })
	counter("live_sent_total", "Ephemeral events written to devices.", func() float64 { return float64(dm.LiveSent.Load()) })
	counter("live_dropped_total", "Ephemeral events dropped because a device's queue was full.", func() float64 { return float64(dm.LiveDropped.Load()) })
	gauge("devices_connected", "Connected devices.", func() float64 { return float64(dm.Connected.Load()) })
	return reg
}

// loopbackOnly answers 404 to clients that are not on this machine. (Behind
// a reverse proxy on the same host every client looks local: keep
// /debug/pprof/ out of what the proxy forwards.)
func loopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}
