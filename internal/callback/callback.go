// Package callback sends Tencent-style callbacks (webhooks) to the app's
// back-end, reference §8: the signed HTTP request, and the fixed pool of
// workers that sends the notifications. The command layer decides what to
// send and what an answer means; it calls a Pool through command.Callbacks.
//
// The before-send callback runs inside the send it judges (Call): that one
// send waits for it (at most Timeout, 2 s as Tencent's), nothing else does.
// Every other callback is a notification (Notify): it is queued to a fixed
// pool of workers and the queue is bounded, so a slow or dead callback
// server costs memory for Queue jobs at most and never delays a send. When
// the queue is full the notification is dropped and counted (Dropped).
package callback

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/duet-im/duet/command"
)

// Config configures the callbacks.
type Config struct {
	URL      string // the app's callback URL (required)
	Token    string // optional signing token (§8.1 "鉴权 token")
	SDKAppID uint64
	Timeout  time.Duration // per callback; default 2 s (§8.1)
	Workers  int           // notification workers; default 4
	Queue    int           // notifications waiting; default 4096
	Client   *http.Client  // default: keep-alive client with Timeout
	Log      *slog.Logger
}

// Pool sends callbacks; its workers run from New until Close.
type Pool struct {
	cfg     Config
	client  *http.Client
	log     *slog.Logger
	jobs    chan command.CallbackJob
	stop    chan struct{}
	ctx     context.Context // cancelled by Close: in-flight notifications end
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
	dropped atomic.Int64
}

var _ command.Callbacks = (*Pool)(nil)

// New starts the notification workers.
func New(cfg Config) *Pool {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 4096
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	p := &Pool{cfg: cfg, client: cfg.Client, log: cfg.Log,
		jobs: make(chan command.CallbackJob, cfg.Queue), stop: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if p.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64 // §8.1: long connections by default
		p.client = &http.Client{Transport: tr, Timeout: cfg.Timeout}
	}
	for range cfg.Workers {
		p.wg.Add(1)
		go p.worker()
	}
	return p
}

// Close stops the notification workers; queued notifications are
// abandoned.
func (p *Pool) Close() {
	p.once.Do(func() { close(p.stop); p.cancel() })
	p.wg.Wait()
}

// Dropped counts notifications dropped because the queue was full.
func (p *Pool) Dropped() int64 { return p.dropped.Load() }

func (p *Pool) worker() {
	defer p.wg.Done()
	for {
		select {
		case <-p.stop:
			return
		case j := <-p.jobs:
			// After-callbacks' answers are ignored (§8.1); only failures are logged.
			if _, err := p.Call(p.ctx, j); err != nil {
				p.log.Warn("callback failed", "command", j.Command, "error", err)
			}
		}
	}
}

// Notify queues a notification without ever blocking.
func (p *Pool) Notify(j command.CallbackJob) {
	select {
	case p.jobs <- j:
	default:
		p.dropped.Add(1)
	}
}

// Sign is the callback signature of §8.1: hex(sha256(token + RequestTime)).
func Sign(token string, requestTime int64) string {
	sum := sha256.Sum256([]byte(token + strconv.FormatInt(requestTime, 10)))
	return hex.EncodeToString(sum[:])
}

// Call POSTs one callback, within Timeout, and decodes the answer.
func (p *Pool) Call(ctx context.Context, j command.CallbackJob) (*command.CallbackReply, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	u, err := url.Parse(p.cfg.URL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("SdkAppid", strconv.FormatUint(p.cfg.SDKAppID, 10))
	q.Set("CallbackCommand", j.Command)
	q.Set("contenttype", "json")
	q.Set("ClientIP", j.IP)
	q.Set("OptPlatform", j.Platform)
	if p.cfg.Token != "" {
		now := time.Now().Unix()
		q.Set("RequestTime", strconv.FormatInt(now, 10))
		q.Set("Sign", Sign(p.cfg.Token, now))
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(j.Body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("callback answered HTTP %d", resp.StatusCode)
	}
	var r command.CallbackReply
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("callback answer is not JSON: %v", err)
	}
	if r.ErrorCode == nil {
		return nil, fmt.Errorf("callback answer has no ErrorCode")
	}
	return &r, nil
}
