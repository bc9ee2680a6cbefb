package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/store"
)

// Backup and restore of a cluster (docs/cluster.md §19, "Back up"): GET
// /cluster/backup streams a backup archive of the cluster as this node's
// views have it (cluster.Cluster.Backup); POST /cluster/restore restores
// one into this cluster, which must be new and empty. Both answer loopback
// clients only, as POST /cluster/remove: an operator runs `duet cluster
// backup|restore|seed` on a node's own machine, and a backup holds every
// message.

// clusterBackupRoutes registers the routes (http.go).
func (s *Server) clusterBackupRoutes(mux *http.ServeMux) {
	mux.Handle("GET /cluster/backup", loopbackOnly(http.HandlerFunc(s.clusterBackup)))
	mux.Handle("POST /cluster/restore", loopbackOnly(http.HandlerFunc(s.clusterRestore)))
}

// backupTimeout bounds one backup or restore request.
const backupTimeout = time.Hour

// joined answers 503 and false while this node has not joined.
func (s *Server) joined(w http.ResponseWriter) bool {
	if s.cluster.state.Load() < stateCatchingUp {
		http.Error(w, "this node has not joined the cluster yet", http.StatusServiceUnavailable)
		return false
	}
	return true
}

// unbounded lifts the HTTP server's read and write deadlines for a
// request that streams a whole backup.
func unbounded(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
}

func (s *Server) clusterBackup(w http.ResponseWriter, r *http.Request) {
	if !s.joined(w) {
		return
	}
	unbounded(w)
	ctx, cancel := context.WithTimeout(r.Context(), backupTimeout)
	defer cancel()
	cp := s.cluster
	out := &sentWriter{w: w, header: func() {
		w.Header().Set("Content-Type", "application/x-tar")
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="duet-%s-%s.tar"`, cp.cfg.Name, time.Now().UTC().Format("20060102T150405Z")))
	}}
	m, err := cp.join.Backup(ctx, out, s.cfg.Data, cp.cursors, cp.cfg.Name)
	if err != nil {
		s.log.Error("cluster: backup", "error", err)
		if out.n == 0 {
			http.Error(w, "backup: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		// Part of the archive is out: cut the connection, so that the
		// client sees a broken archive, never a short one that looks whole.
		panic(http.ErrAbortHandler)
	}
	s.log.Info("cluster: backup written", "partitions", m.Partitions, "seq", m.Parts[0].Seq, "bytes", out.n)
}

// sentWriter counts what went to the client, setting the headers before
// the first byte.
type sentWriter struct {
	w      http.ResponseWriter
	header func()
	n      int64
}

func (s *sentWriter) Write(p []byte) (int, error) {
	if s.n == 0 && s.header != nil {
		s.header()
		s.header = nil
	}
	n, err := s.w.Write(p)
	s.n += int64(n)
	return n, err
}

func (s *Server) clusterRestore(w http.ResponseWriter, r *http.Request) {
	if !s.joined(w) {
		return
	}
	unbounded(w)
	ctx, cancel := context.WithTimeout(r.Context(), backupTimeout)
	defer cancel()
	cp := s.cluster
	out, err := cp.join.Restore(ctx, r.Body, s.cfg.Data, cp.cursors, func(object, sum string, seq uint64) []byte {
		return store.RestoreEntry(store.Restore{Object: object, SHA256: sum, Seq: seq})
	}, store.EmptySnapshot)
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, cluster.ErrNotEmpty), errors.Is(err, cluster.ErrBackupMismatch):
			code = http.StatusConflict
		case errors.Is(err, cluster.ErrBadBackup):
			code = http.StatusUnprocessableEntity
		}
		s.log.Warn("cluster: restore refused or failed", "error", err)
		// The rest of the archive is read (and dropped) before the answer:
		// a client still sending it would otherwise see its connection
		// reset rather than the reason.
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "restore: "+err.Error(), code)
		return
	}
	s.log.Info("cluster: backup restored", "partitions", len(out.Partitions), "cursors", out.Cursors)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
