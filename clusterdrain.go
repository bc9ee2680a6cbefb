package main

// duet cluster drain / undrain: move the work off a running node without
// stopping it, and back (docs/cluster.md §19).

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/duet-im/duet/internal/server"
)

func clusterDrainCmd(args []string) error { return clusterDrain(args, true) }

func clusterUndrainCmd(args []string) error { return clusterDrain(args, false) }

// clusterDrain asks the node at --http (on this machine: the routes are
// loopback-only) to drain or to stop draining.
func clusterDrain(args []string, on bool) error {
	name, what := "undrain", "Lets the node at --http take partitions and devices again after `duet cluster drain`."
	if on {
		name, what = "drain", "Moves the work off the node at --http without stopping it: it releases every partition it owns (another node takes over at once) and takes none, closes its devices' connections and refuses new ones (CONNACK server unavailable), and its /healthz answers 503 draining; REST calls to it still work. Until `duet cluster undrain` or a restart. Run it on the node's machine (POST /cluster/drain answers loopback clients only)."
	}
	cfg, fl, err := loadConfig("duet cluster "+name, args, "http")
	if err != nil {
		return err
	}
	setUsage(fl, "cluster "+name+" [--http HOST:PORT]", what)
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("cluster %s takes no arguments, got %q", name, fl.Arg(0))
	}
	if cfg.HTTP == "" {
		return fmt.Errorf("cluster %s: --http is required (the node's HTTP listener, host:port)", name)
	}
	base := nodeURL(cfg.HTTP)
	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Post(base+"/cluster/"+name, "", nil)
	if err != nil {
		return fmt.Errorf("cluster %s: %w", name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("cluster %s: %w", name, err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("cluster %s: %s has no /cluster/%s: is it a cluster node (--cluster-name), and is --http this machine's (loopback) address?", name, base, name)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cluster %s: %s answered %s: %s", name, base, resp.Status, strings.TrimSpace(string(body)))
	}
	var out server.DrainStatus
	if err := json.Unmarshal(body, &out); err != nil {
		return fmt.Errorf("cluster %s: %w", name, err)
	}
	if !on {
		fmt.Printf("node %s is not draining: it accepts devices and may take partitions again\n", out.Node)
		return nil
	}
	fmt.Printf("node %s is draining: it owns no partition and refuses devices (%d disconnected); `duet cluster undrain` reverses it\n", out.Node, out.Devices)
	return nil
}
