// Command bench is Duet's load tool: it logs in N sender/receiver pairs,
// has every sender publish to its receiver, and reports delivered messages
// per second and send-to-receipt latency percentiles.
//
// Design. A run (Run in bench.go) has four bounded phases: connect (receivers
// first, then senders, ConnParallel dials at a time; in duet mode also wait
// for every receiver's sync_complete), send (Window workers per sender, each
// publishing QoS 1 and waiting for the PUBACK before its next message, until
// Duration or Messages), drain (poll until every acknowledged message has
// arrived, at most Drain) and close. What travels on the wire is a mode
// (mode.go): "duet" speaks Duet's MQTT contract, "raw" plain topics any
// broker serves. The MQTT library is hidden behind a two-method client
// (client.go): MQTT 3.1.1 through a small built-in client (wire.go, the
// default: the tool shares the machine with the server it measures, and its
// CPU per message is taken from the server) or through paho.mqtt.golang,
// and MQTT 5 through paho.golang. Every message
// carries its send time in Unix nanoseconds; receivers record receipt minus
// that into a per-pair log-linear histogram (hist.go), merged at the end.
// Counters live per pair, so there is no shared hot state between pairs.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usageText = `Usage: go run ./clients/bench [flags]

Logs in -pairs sender/receiver pairs, sends QoS 1 messages from each sender
to its receiver and prints sent/delivered/lost counts, delivered msgs/s over
the send window and latency percentiles (send time to receipt).

Modes:
  -mode duet (default)  Duet's MQTT contract. Users are {prefix}-s-{i} and
      {prefix}-r-{i} (i = 0..pairs-1), client id {user}:{device}, password a
      UserSig made from -secret/-sdkappid. Start the server with
      --auto-accounts so these users are created on first login. Senders
      publish openim/sendmsg requests to im/{me}/req/openim/sendmsg; replies
      with ErrorCode != 0 count as errors. The message text is the send time
      in Unix nanoseconds (then, with -payload N, a space and N filler bytes).
  -mode raw  plain MQTT without credentials, for any broker: sender i
      publishes to {prefix}/{i}, receiver i subscribes to it.

Examples:
  DUET_SECRET=... go run ./clients/bench -pairs 100 -duration 10s
  go run ./clients/bench -mode raw -addr tcp://127.0.0.1:18830 -pairs 1000 -window 16
  go run ./clients/bench -mode raw -addr tcp://127.0.0.1:18830 -client paho

Ctrl-C stops sending; publishes in flight still get their PUBACK, the drain
still runs and the summary is printed. A second Ctrl-C exits at once.

Clients (-client):
  wire (default for MQTT 3.1.1)  a small built-in MQTT 3.1.1 client using
      about half of paho's CPU per message, which leaves more of a shared
      machine to the server being measured.
  paho  paho.mqtt.golang for MQTT 3.1.1; with -v5, paho.golang (the only
      MQTT 5 client here, so -client wire -v5 is refused).

Every pair needs two connections (and the broker two file descriptors):
for 1,000+ pairs check 'ulimit -n' on the broker side. Only loopback
brokers are accepted unless -allow-remote is given.

Flags:
`

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	cfg, asJSON, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first Ctrl-C the run stops sending, drains and reports; a
	// second one gets Go's default handling and ends the process.
	context.AfterFunc(ctx, stop)

	res, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		return 0
	}
	printSummary(stdout, res)
	return 0
}

func parseFlags(args []string, stderr io.Writer) (Config, bool, error) {
	var cfg Config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Mode, "mode", "duet", "duet or raw")
	fs.StringVar(&cfg.Addr, "addr", "tcp://127.0.0.1:1883", "broker address, or a comma-separated list of a cluster's nodes (pairs spread over them; see -placement)")
	fs.IntVar(&cfg.Pairs, "pairs", 100, "sender/receiver pairs (2 connections each)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "sending window; also bounds -messages runs")
	fs.IntVar(&cfg.Messages, "messages", 0, "messages per sender (0 = as many as fit in -duration)")
	fs.IntVar(&cfg.Window, "window", 1, "max unacknowledged QoS 1 publishes per sender (1 = next after PUBACK)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "per-sender msgs/s cap (0 = as fast as acks allow)")
	fs.IntVar(&cfg.Payload, "payload", 0, "extra filler bytes per message")
	fs.BoolVar(&cfg.V5, "v5", false, "use MQTT 5 (paho.golang) instead of MQTT 3.1.1")
	fs.StringVar(&cfg.Client, "client", "", "MQTT 3.1.1 client: wire (built in, lean) or paho (paho.mqtt.golang); default wire, or paho with -v5")
	fs.IntVar(&cfg.V5ReceiveMax, "v5-receive-max", defaultV5RecvMax, "MQTT 5 Receive Maximum in CONNECT (0 = omit; paho.golang then buffers 65535 messages per connection)")
	fs.StringVar(&cfg.Prefix, "prefix", "bench", "user id / topic prefix")
	fs.StringVar(&cfg.Secret, "secret", "", "duet: UserSig secret key (default $DUET_SECRET)")
	fs.Uint64Var(&cfg.SDKAppID, "sdkappid", defaultSDKAppID, "duet: SDKAppID")
	fs.StringVar(&cfg.Device, "device", "bench", "duet: device id in the client id {user}:{device}")
	fs.DurationVar(&cfg.SigExpire, "sig-expire", 24*time.Hour, "duet: UserSig validity")
	pids := fs.String("broker-pid", "", "the broker's process id on this machine, or a comma-separated list (a cluster's nodes): report their CPU per message over the send window (Linux)")
	fs.StringVar(&cfg.Placement, "placement", "cross", "with several comma-separated -addr (a cluster's nodes): cross puts a pair's sender and receiver on different nodes, same on one")
	fs.BoolVar(&cfg.SendersReplyOnly, "senders-reply-only", false, "duet: senders subscribe to im/{me}/rsp only (a back-end bot), not to their timeline (a phone)")
	fs.IntVar(&cfg.ConnParallel, "conn-parallel", 100, "connections dialled concurrently")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "connect/subscribe/PUBACK timeout")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 10*time.Second, "duet: max wait for receivers' sync_complete")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "max wait for stragglers after sending stops")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow a non-loopback broker address")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	quiet := fs.Bool("q", false, "no progress output on stderr")
	if err := fs.Parse(args); err != nil {
		return cfg, false, err
	}
	if fs.NArg() > 0 {
		return cfg, false, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	for i, f := range strings.Split(*pids, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil {
			return cfg, false, fmt.Errorf("broker-pid %q: want a process id", f)
		}
		if i == 0 {
			cfg.BrokerPID = pid
		} else {
			cfg.BrokerPIDs = append(cfg.BrokerPIDs, pid)
		}
	}
	if cfg.Secret == "" {
		cfg.Secret = os.Getenv("DUET_SECRET")
	}
	if !*quiet {
		cfg.Log = stderr
		cfg.Progress = true
	}
	// Validate now so usage errors exit 2 before any connection is made.
	check := cfg
	if err := check.normalize(); err != nil {
		return cfg, false, err
	}
	return cfg, *asJSON, nil
}

func printSummary(w io.Writer, r *Result) {
	rate := "max"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%g/s", r.Rate)
	}
	fmt.Fprintf(w, "mode=%s protocol=%s client=%s addr=%s pairs=%d window=%d rate=%s payload=+%dB\n",
		r.Mode, r.Protocol, r.Client, r.Addr, r.Pairs, r.Window, rate, r.Payload)
	fmt.Fprintf(w, "sent=%d delivered=%d lost=%d errors=%d (publish=%d rejected=%d connections_lost=%d)",
		r.Sent, r.Delivered, r.Lost, r.Errors, r.PublishErrors, r.Rejected, r.ConnLost)
	if r.Stale > 0 {
		fmt.Fprintf(w, " stale_ignored=%d", r.Stale)
	}
	fmt.Fprintln(w)
	state := "drained"
	if !r.Drained {
		state = "NOT drained"
	}
	if r.Interrupted {
		state += ", interrupted"
	}
	fmt.Fprintf(w, "throughput: %.0f delivered msgs/s (%.0f sent/s) over %.2fs send window; connect %.2fs; %s\n",
		r.DeliveredRate, r.SentRate, r.SendSecs, r.ConnectSecs, state)
	l := r.Latency
	fmt.Fprintf(w, "latency ms: p50=%.3f p90=%.3f p99=%.3f max=%.3f (min=%.3f mean=%.3f n=%d)\n",
		l.P50, l.P90, l.P99, l.Max, l.Min, l.Mean, l.N)
	if r.BrokerCPUSecs > 0 {
		fmt.Fprintf(w, "cpu over the send window: broker %.2fs (%.0f µs/msg), this tool %.2fs (%.0f µs/msg)\n",
			r.BrokerCPUSecs, r.BrokerCPUPerMsg, r.ToolCPUSecs, r.ToolCPUPerMsg)
	} else {
		fmt.Fprintf(w, "cpu over the send window: this tool %.2fs (%.0f µs/msg)\n", r.ToolCPUSecs, r.ToolCPUPerMsg)
	}
	for _, e := range r.FirstErrors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
}
