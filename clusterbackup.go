package main

// duet cluster backup|restore|seed and duet backup (docs/cluster.md §19,
// "Back up" and "From one node to a cluster").

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/store"
)

// clusterBackupCmd is `duet cluster backup --http H:P --out FILE`.
func clusterBackupCmd(args []string) error {
	cfg, fl, err := loadConfig("duet cluster backup", args, "http")
	if err != nil {
		return err
	}
	out := fl.String("out", "", "the backup file to write (required); written as FILE.tmp and renamed once whole")
	setUsage(fl, "cluster backup --out FILE [--http HOST:PORT]", "Writes a backup of a running cluster to FILE: a tar of manifest.json, each partition's snapshot and the device cursors, a consistent cut of the cluster as the node at --http has it (its GET /cluster/backup, answered to loopback clients only: run it on a node's machine).")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("cluster backup takes no arguments, got %q", fl.Arg(0))
	}
	if *out == "" || cfg.HTTP == "" {
		return errors.New("cluster backup: --out FILE and --http HOST:PORT (a running node's HTTP listener) are required")
	}
	base := nodeURL(cfg.HTTP)
	resp, err := http.Get(base + "/cluster/backup")
	if err != nil {
		return fmt.Errorf("cluster backup: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return fmt.Errorf("cluster backup: %s answered %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
	}
	m, err := writeBackupFile(*out, func(w io.Writer) (cluster.Manifest, error) {
		// Checked as it is written: a connection cut mid-way, or a file that
		// does not match the manifest, leaves no FILE.
		m, err := cluster.ReadBackup(io.TeeReader(resp.Body, w), cluster.BackupReader{})
		if err == nil {
			_, err = io.Copy(w, resp.Body)
		}
		return m, err
	})
	if err != nil {
		return fmt.Errorf("cluster backup: %w", err)
	}
	printManifest(*out, m)
	return nil
}

// writeBackupFile writes a backup to path through path.tmp, renamed once
// write has returned without error and the file is synced; a failure
// leaves neither.
func writeBackupFile(path string, write func(io.Writer) (cluster.Manifest, error)) (cluster.Manifest, error) {
	tmp := path + ".tmp"
	// A FILE.tmp left by a run that was killed is written over.
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return cluster.Manifest{}, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	m, err := write(bw)
	if err != nil {
		return m, err
	}
	if err := bw.Flush(); err != nil {
		return m, err
	}
	if err := f.Sync(); err != nil {
		return m, err
	}
	if err := f.Close(); err != nil {
		return m, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return m, err
	}
	ok = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return m, nil
}

func printManifest(path string, m cluster.Manifest) {
	what := "cluster " + m.Cluster
	if m.Cluster == "" {
		what = m.Source
	}
	fmt.Printf("%s: backup of %s, %d partition(s), taken %s\n", path, what, m.Partitions, m.Created.Format("2006-01-02 15:04:05Z"))
	for _, p := range m.Parts {
		fmt.Printf("  %s  seq %d  %d bytes  sha256 %s\n", p.Name, p.Seq, p.Size, p.SHA256)
	}
	fmt.Printf("  %s  %d bytes  sha256 %s\n", m.Cursors.Name, m.Cursors.Size, m.Cursors.SHA256)
}

// clusterRestoreCmd is `duet cluster restore FILE --http H:P`.
func clusterRestoreCmd(args []string) error {
	cfg, fl, err := loadConfig("duet cluster restore", args, "http")
	if err != nil {
		return err
	}
	setUsage(fl, "cluster restore FILE [--http HOST:PORT]", "Restores the backup FILE (duet cluster backup, duet backup) into a new, empty cluster with the same number of partitions, through the node at --http (its POST /cluster/restore, answered to loopback clients only: run it on a node's machine). A cluster that holds data is refused.")
	files, err := parseInterspersed(fl, args)
	if err != nil {
		return err
	}
	if len(files) != 1 || cfg.HTTP == "" {
		return errors.New("cluster restore: usage: duet cluster restore FILE --http HOST:PORT")
	}
	f, err := os.Open(files[0])
	if err != nil {
		return fmt.Errorf("cluster restore: %w", err)
	}
	defer f.Close()
	return postRestore(cfg.HTTP, f)
}

// parseInterspersed parses args with flags before and after the
// positional arguments (`restore FILE --http H:P`), which it returns.
func parseInterspersed(fl *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fl.Parse(args); err != nil {
			return nil, err
		}
		if fl.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fl.Arg(0))
		args = fl.Args()[1:]
	}
}

// postRestore sends a backup to a node's POST /cluster/restore and prints
// what it restored.
func postRestore(httpAddr string, body io.Reader) error {
	base := nodeURL(httpAddr)
	resp, err := http.Post(base+"/cluster/restore", "application/x-tar", body)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("restore: %s has no /cluster/restore: is it a cluster node, on this machine?", base)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("restore: %s answered %s: %s", base, resp.Status, strings.TrimSpace(string(raw)))
	}
	var out cluster.Restored
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, p := range out.Partitions {
		fmt.Printf("partition %d restored: the backup's sequence %d is this cluster's %d (object %s)\n", p.Partition, p.BackupSeq, p.Seq, p.Object)
	}
	fmt.Printf("%d device cursors restored\n", out.Cursors)
	return nil
}

// openSingleNode opens the store of the stopped single node whose data
// directory is data, holding the directory's lock until close: a server
// started meanwhile is refused, and so is a directory a server holds.
func openSingleNode(data string) (st *store.Store, closeFn func(), err error) {
	lock, err := server.LockData(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (stop it first)", err)
	}
	dir := filepath.Join(data, "store")
	if _, err := os.Stat(dir); err != nil {
		lock.Close()
		return nil, nil, fmt.Errorf("%s holds no store: is it a Duet data directory? (%w)", data, err)
	}
	st, err = store.Open(dir, store.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		lock.Close()
		return nil, nil, err
	}
	return st, func() { st.Close(); lock.Close() }, nil
}

// singleNodeBackup writes a backup of a single node's store to w, spooling
// in spool: for a cluster of parts partitions, each partition's share of
// the store (store.ExportPartition; with one partition, all of it) as its
// snapshot at sequence 0, and the cursors.
func singleNodeBackup(st *store.Store, w io.Writer, spool string, parts int) (cluster.Manifest, error) {
	of := func(user string) int { return cluster.Partition(user, parts) }
	return cluster.WriteBackup(context.Background(), w, spool, cluster.BackupSource{
		Manifest: cluster.Manifest{Source: "single node", Partitions: parts, SnapshotFormat: st.SnapshotFormat()},
		Cursors: func(_ context.Context, put func(cluster.CursorRecord) error) error {
			return st.ExportCursors(func(user, device string, seq uint64) error {
				return put(cluster.CursorRecord{User: user, Device: device, Seq: seq})
			}, func(user string, seq uint64) error {
				return put(cluster.CursorRecord{User: user, HighWater: true, Seq: seq})
			})
		},
		Snapshot: func(_ context.Context, p int, put func(uint64, io.Reader) error) error {
			if parts == 1 {
				return st.Export(put)
			}
			return st.ExportPartition(p, of, put)
		},
	})
}

// backupCmd is `duet backup --data DIR --out FILE` (a stopped single node).
func backupCmd(args []string) error {
	cfg, fl, err := loadConfig("duet backup", args, "data")
	if err != nil {
		return err
	}
	out := fl.String("out", "", "the backup file to write (required); written as FILE.tmp and renamed once whole")
	parts := fl.Int("partitions", 1, "write it for a cluster of this many partitions (--cluster-partitions of the cluster it will be restored into): the data is split by user")
	setUsage(fl, "backup --data DIR --out FILE [--partitions P]", "Writes a backup of a stopped single node's data directory to FILE, in the format of duet cluster backup: restore it with duet cluster restore (into a cluster of P partitions), or keep it. The server must be stopped (its directory's lock is taken).")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 || *out == "" {
		return errors.New("backup: usage: duet backup --data DIR --out FILE [--partitions P]")
	}
	if *parts < 1 || *parts > cluster.MaxPartitions {
		return fmt.Errorf("backup: --partitions %d: want 1 to %d", *parts, cluster.MaxPartitions)
	}
	st, closeStore, err := openSingleNode(cfg.Data)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer closeStore()
	m, err := writeBackupFile(*out, func(w io.Writer) (cluster.Manifest, error) {
		return singleNodeBackup(st, w, filepath.Dir(*out), *parts)
	})
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	printManifest(*out, m)
	return nil
}

// clusterSeedCmd is `duet cluster seed --from DATA --http H:P`.
func clusterSeedCmd(args []string) error {
	cfg, fl, err := loadConfig("duet cluster seed", args, "http")
	if err != nil {
		return err
	}
	from := fl.String("from", "", "the stopped single node's data directory (required)")
	setUsage(fl, "cluster seed --from DATA [--http HOST:PORT]", "Moves a stopped single node's data (accounts, messages, relationships, device cursors) into a new, empty cluster: a backup of DATA (as duet backup writes) restored through the node at --http (its POST /cluster/restore, loopback clients only). DATA is left as it was.")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 || *from == "" || cfg.HTTP == "" {
		return errors.New("cluster seed: usage: duet cluster seed --from DATA --http HOST:PORT")
	}
	st, closeStore, err := openSingleNode(*from)
	if err != nil {
		return fmt.Errorf("cluster seed: %w", err)
	}
	defer closeStore()
	parts, err := clusterPartitions(cfg.HTTP)
	if err != nil {
		return fmt.Errorf("cluster seed: %w", err)
	}
	pr, pw := io.Pipe()
	wrote := make(chan error, 1)
	go func() {
		_, err := singleNodeBackup(st, pw, *from, parts)
		pw.CloseWithError(err)
		wrote <- err
	}()
	err = postRestore(cfg.HTTP, pr)
	pr.CloseWithError(errors.New("the node stopped reading"))
	if werr := <-wrote; werr != nil && err != nil {
		return fmt.Errorf("cluster seed: reading %s: %w (%w)", *from, werr, err)
	}
	if err != nil {
		return fmt.Errorf("cluster seed: %w", err)
	}
	return nil
}

// clusterPartitions asks the node at httpAddr for its cluster's number of
// partitions (its GET /cluster): a seed splits the single node's data for
// it.
func clusterPartitions(httpAddr string) (int, error) {
	base := nodeURL(httpAddr)
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(base + "/cluster")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s/cluster answered %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
	}
	var cs server.ClusterStatus
	if err := json.Unmarshal(body, &cs); err != nil || cs.Partitions < 1 {
		return 0, fmt.Errorf("%s/cluster names no partitions (%v)", base, err)
	}
	return cs.Partitions, nil
}
