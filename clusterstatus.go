package main

// duet cluster status: the cluster as one node sees it (docs/cluster.md
// §18.2), read from that node's GET /cluster.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/internal/server"
)

func clusterStatusCmd(args []string) error {
	cfg, fl, err := loadConfig("duet cluster status", args, "http")
	if err != nil {
		return err
	}
	setUsage(fl, "cluster status [--http HOST:PORT]", "Prints a running cluster's nodes (state, partitions owned, applied log sequence, apply lag), and each partition's owner, as the node at --http sees them (its GET /cluster).")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("cluster status takes no arguments, got %q", fl.Arg(0))
	}
	if cfg.HTTP == "" {
		return errors.New("cluster status: --http is required (a node's HTTP listener, host:port)")
	}
	base := nodeURL(cfg.HTTP)
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(base + "/cluster")
	if err != nil {
		return fmt.Errorf("cluster status: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("cluster status: %w", err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("cluster status: %s has no /cluster page: is it a cluster node (--cluster-name)?", base)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cluster status: %s/cluster answered %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
	}
	var cs server.ClusterStatus
	if err := json.Unmarshal(body, &cs); err != nil {
		return fmt.Errorf("cluster status: %s/cluster: %w", base, err)
	}
	printClusterStatus(os.Stdout, cs)
	return nil
}

// printClusterStatus prints cs as three tables: the cluster, its nodes,
// its partitions.
func printClusterStatus(w io.Writer, cs server.ClusterStatus) {
	sync := cs.Sync
	if sync == "" {
		sync = "(external NATS)"
	}
	fmt.Fprintf(w, "cluster %s  partitions %d  replicas %d  sync %s  (as node %s sees it)\n\n", cs.Cluster, cs.Partitions, cs.Replicas, sync, cs.Node)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// A note (why a node is unhealthy) only when some node has one: an
	// empty last column would pad every line with spaces.
	notes := slices.ContainsFunc(cs.Nodes, func(n server.NodeStatus) bool { return n.Reason != "" })
	header := "node\tstate\towns\tapplied\tlag\tversion"
	if notes {
		header += "\tnote"
	}
	fmt.Fprintln(tw, header)
	for _, n := range cs.Nodes {
		owns := "-"
		if len(n.Owned) > 0 {
			var ps []string
			for _, p := range n.Owned {
				ps = append(ps, strconv.Itoa(p))
			}
			owns = strings.Join(ps, ",")
		}
		// The largest apply lag over partitions, in log entries.
		lag := "-"
		if len(n.Lag) > 0 {
			lag = strconv.FormatUint(slices.Max(n.Lag), 10)
		}
		applied := strconv.FormatUint(n.Applied, 10)
		if n.State == "no answer" {
			applied = "-"
		}
		version := strings.TrimPrefix(n.Version, "duet ")
		version, _, _ = strings.Cut(version, " ")
		if version == "" {
			version = "-"
		}
		row := strings.Join([]string{n.Node, n.State, owns, applied, lag, version}, "\t")
		if notes {
			row += "\t" + n.Reason
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "partition\towner")
	for _, p := range cs.Owners {
		owner := p.Owner
		if owner == "" {
			owner = "(none)"
		}
		fmt.Fprintf(tw, "%d\t%s\n", p.Partition, owner)
	}
	tw.Flush()
}

// clusterRemoveCmd is `duet cluster remove NODE`: it asks the node at
// --http (on this machine: the route is loopback-only) to remove NODE,
// stopped for good, from JetStream (docs/cluster.md §19).
func clusterRemoveCmd(args []string) error {
	cfg, fl, err := loadConfig("duet cluster remove", args, "http")
	if err != nil {
		return err
	}
	setUsage(fl, "cluster remove NODE [--http HOST:PORT]", "Removes NODE, a node stopped for good, from the cluster's JetStream (its meta group and every stream's replicas), so that its replicas are placed on the remaining nodes. Ask a running node on its own machine: --http is its HTTP listener (POST /cluster/remove answers loopback clients only).")
	// The node's name may come before the flags, as the docs write it.
	names, err := parseInterspersed(fl, args)
	if err != nil {
		return err
	}
	if len(names) != 1 {
		return errors.New("cluster remove: name one node: duet cluster remove NODE [--http HOST:PORT]")
	}
	if cfg.HTTP == "" {
		return errors.New("cluster remove: --http is required (a running node's HTTP listener, host:port)")
	}
	base := nodeURL(cfg.HTTP)
	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Post(base+"/cluster/remove?node="+url.QueryEscape(names[0]), "", nil)
	if err != nil {
		return fmt.Errorf("cluster remove: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("cluster remove: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cluster remove: %s answered %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
	}
	var out cluster.Removed
	if err := json.Unmarshal(body, &out); err != nil {
		return fmt.Errorf("cluster remove: %w", err)
	}
	fmt.Printf("node %s removed from the cluster's JetStream (meta group: %v; streams asked to drop it: %s)\n",
		out.Node, out.Meta, strings.Join(out.Streams, ", "))
	return nil
}

// nodeURL is a node's HTTP base URL from --http (host:port or a URL).
func nodeURL(http string) string {
	if !strings.Contains(http, "://") {
		http = "http://" + http
	}
	return strings.TrimSuffix(http, "/")
}
