package server

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// routes is the HTTP surface: health and metrics (REST comes under /v4/).
// Handler is the HTTP listener's handler, complete once Start has run
// (the web chat names the bound WebSocket address); tests serve it from
// their own HTTP servers.
func (s *Server) Handler() http.Handler {
	if s.handler == nil {
		s.handler = s.routes()
	}
	return s.handler
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		// A listener that cannot accept (out of descriptors, or stopped) is
		// a server devices cannot reach, however well the rest runs.
		if down := s.broker.Down(); len(down) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(map[string]any{"status": "listener down", "listeners": down})
			return
		}
		// A cluster node that has not joined, or whose view is behind the
		// log, would serve devices stale data (docs/cluster.md §10.4).
		if s.cluster != nil {
			if reason := s.clusterUnhealthy(); reason != "" {
				w.WriteHeader(http.StatusServiceUnavailable)
				json.NewEncoder(w).Encode(map[string]any{"status": "unavailable", "reason": reason})
				return
			}
		}
		w.Write([]byte(`{"status":"ok"}`))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics(), promhttp.HandlerOpts{}))
	if s.cluster != nil {
		mux.HandleFunc("GET /cluster", s.clusterPage) // cluster_status.go; `duet cluster status` reads it
		mux.Handle("POST /cluster/remove", loopbackOnly(http.HandlerFunc(s.clusterRemove)))
		s.clusterBackupRoutes(mux)                                                        // GET /cluster/backup, POST /cluster/restore (cluster_backup.go)
		mux.Handle("POST /cluster/drain", loopbackOnly(http.HandlerFunc(s.clusterDrain))) // cluster_drain.go
		mux.Handle("POST /cluster/undrain", loopbackOnly(http.HandlerFunc(s.clusterUndrain)))
	}
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

// httpServer bounds what a client may hold before its request is in: the
// headers within connect-timeout and a few KB, the whole request (REST
// bodies are at most 1 MiB, rest.Config.MaxBody; the other routes are GETs
// whose bodies are not read) within http-read-timeout.
func (s *Server) httpServer() *http.Server {
	cfg := s.cfg
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: cfg.ConnectTimeout,
		ReadTimeout:       cfg.HTTPReadTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// metrics exposes the counters the store and the broker keep.
func (s *Server) metrics() *prometheus.Registry {
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
	em := &s.broker.Edge
	counter("listener_accept_errors_total", "Failed accepts on the MQTT listeners (out of descriptors…), each retried.", func() float64 { return float64(em.AcceptErrors.Load()) })
	gauge("listeners_down", "MQTT listeners failing to accept now.", func() float64 { return float64(len(s.broker.Down())) })
	gauge("connections_pending_login", "MQTT connections accepted and not yet logged in.", func() float64 { return float64(em.Pending.Load()) })
	counter("connections_over_limit_total", "MQTT connections closed at accept: over pending-per-ip or max-pending.", func() float64 { return float64(em.OverLimit.Load()) })
	counter("connect_too_large_total", "MQTT connections closed because their first packet was not a CONNECT of at most 4 KB.", func() float64 { return float64(em.TooLarge.Load()) })
	counter("connect_timeouts_total", "MQTT connections closed because no CONNECT arrived within connect-timeout.", func() float64 { return float64(em.TimedOut.Load()) })
	if s.cluster != nil {
		s.clusterMetrics(reg)
	}
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
