package sdk

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v5packets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Protocol selects the MQTT version the client speaks.
type Protocol int

const (
	MQTT5   Protocol = iota // MQTT 5.0 (paho.golang), the default
	MQTT311                 // MQTT 3.1.1 (paho.mqtt.golang)
)

// transport is one MQTT connection.
// The two implementations hide the paho libraries' differences.
type transport interface {
	// subscribe subscribes to im/{me}/# at QoS 1, which starts the replay.
	subscribe(ctx context.Context) error
	// publish sends a QoS 1 request and returns once the server answered it
	// with a PUBACK or the connection failed. A refusing PUBACK (MQTT 5
	// reason code 0x80 or above) is a *pubackRefused.
	publish(ctx context.Context, topic string, payload []byte, correlation string) error
	// done is closed when the connection is gone; cause then says why.
	done() <-chan struct{}
	cause() error
	// takenOver reports, once done, whether the server said that another
	// connection with this client id took the session over (MQTT 5
	// DISCONNECT 0x8E).
	takenOver() bool
	// addr is the address this connection was dialled to.
	addr() string
	close()
}

// delivery is one received PUBLISH. ack sends its PUBACK; the SDK calls it
// once the event is applied to the local store, so the server's cursor for
// this device never passes what the device holds.
type delivery struct {
	topic   string
	payload []byte
	ack     func()
	// correlation is the MQTT 5 Correlation Data: on a reply, the request's.
	correlation string
}

// pubackRefused is an MQTT 5 PUBACK with an error reason code: the server
// refused the request (PROTOCOL §3); its reply on rsp carries the code.
type pubackRefused struct {
	reason byte
	info   string
}

func (e *pubackRefused) Error() string {
	return fmt.Sprintf("duet: request refused (PUBACK 0x%02x) %s", e.reason, e.info)
}

type dialConfig struct {
	addr      string
	tls       *tls.Config
	clientID  string
	user      string
	password  string
	keepAlive time.Duration
	timeout   time.Duration
	// onMessage is called for each PUBLISH, in order, from one goroutine. It
	// must not block.
	onMessage func(delivery)
}

// isWebSocket reports whether addr is a WebSocket URL (ws://host:port/mqtt
// or wss://…) rather than host:port.
func isWebSocket(addr string) bool {
	return strings.HasPrefix(addr, "ws://") || strings.HasPrefix(addr, "wss://")
}

func dial(ctx context.Context, p Protocol, cfg dialConfig) (transport, error) {
	if p == MQTT311 {
		return dialV3(ctx, cfg)
	}
	return dialV5(ctx, cfg)
}

// errClosedHere is the cause of a connection this client closed.
var errClosedHere = errors.New("closed by this client")

// lossSignal closes its channel once, keeping the first cause.
type lossSignal struct {
	once  sync.Once
	ch    chan struct{}
	dead  atomic.Bool
	cause error
}

func newLoss() *lossSignal { return &lossSignal{ch: make(chan struct{})} }

func (l *lossSignal) fire(cause error) {
	l.once.Do(func() {
		l.cause = cause
		l.dead.Store(true)
		close(l.ch)
	})
}

// ---- MQTT 5 ----

type v5 struct {
	c        *paho.Client
	loss     *lossSignal
	replaced atomic.Bool
	// told closes once the server's DISCONNECT was handled: paho reports
	// it on a goroutine of its own, often after the connection's end.
	told     chan struct{}
	tellOnce sync.Once
	rsp      string
	user     string
	timeout  time.Duration
	to       string // the address dialled
}

func dialV5(ctx context.Context, cfg dialConfig) (transport, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	var conn net.Conn
	var err error
	if isWebSocket(cfg.addr) {
		conn, err = mqtt.NewWebsocket(cfg.addr, cfg.tls, cfg.timeout, nil, nil)
		if err == nil {
			conn = v5packets.NewThreadSafeConn(conn) // paho writes from several goroutines
		}
	} else if cfg.tls != nil {
		d := tls.Dialer{Config: cfg.tls}
		conn, err = d.DialContext(ctx, "tcp", cfg.addr)
		if err == nil {
			// tls.Conn does not allow concurrent writes; paho writes from
			// several goroutines.
			conn = v5packets.NewThreadSafeConn(conn)
		}
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", cfg.addr)
	}
	if err != nil {
		return nil, err
	}
	t := &v5{loss: newLoss(), told: make(chan struct{}), rsp: "im/" + cfg.user + "/rsp", user: cfg.user, timeout: cfg.timeout, to: cfg.addr}
	t.c = paho.NewClient(paho.ClientConfig{
		ClientID: cfg.clientID,
		Conn:     conn,
		// Acks follow the local store's commits (see delivery.ack); paho
		// sends them in arrival order, as MQTT requires.
		EnableManualAcknowledgment: true,
		SendAcksInterval:           10 * time.Millisecond,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			ack := func() {}
			if p.QoS > 0 {
				ack = func() {
					if !t.loss.dead.Load() {
						_ = t.c.Ack(p)
					}
				}
			}
			d := delivery{topic: p.Topic, payload: p.Payload, ack: ack}
			if p.Properties != nil {
				d.correlation = string(p.Properties.CorrelationData)
			}
			cfg.onMessage(d)
			return true, nil
		}},
		OnClientError: func(err error) { t.loss.fire(err) },
		OnServerDisconnect: func(d *paho.Disconnect) {
			if d.ReasonCode == 0x8E { // Session taken over [MQTT-3.1.4-3]
				t.replaced.Store(true)
			}
			t.tellOnce.Do(func() { close(t.told) })
			reason := ""
			if d.Properties != nil {
				reason = d.Properties.ReasonString
			}
			t.loss.fire(fmt.Errorf("server disconnected (0x%02x) %s", d.ReasonCode, reason))
		},
	})
	ka := uint16(cfg.keepAlive / time.Second)
	ca, err := t.c.Connect(ctx, &paho.Connect{
		ClientID: cfg.clientID, KeepAlive: ka, CleanStart: true,
		Username: cfg.user, UsernameFlag: true, Password: []byte(cfg.password), PasswordFlag: true,
	})
	if err != nil {
		conn.Close()
		if ca != nil && ca.ReasonCode >= 0x80 {
			reason := ""
			if ca.Properties != nil {
				reason = ca.Properties.ReasonString
			}
			switch ca.ReasonCode {
			case 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C:
				// Protocol, client id, credentials, authorisation, ban:
				// the same CONNECT will be refused again.
				return nil, &RefusedError{Code: ca.ReasonCode, Reason: reason}
			}
			return nil, fmt.Errorf("duet: server busy (0x%02x) %s", ca.ReasonCode, reason)
		}
		return nil, err
	}
	go func() {
		<-t.c.Done()
		t.loss.fire(errors.New("connection closed"))
	}()
	return t, nil
}

func (t *v5) subscribe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	// paho waits for the SUBACK until ctx ends, even after the server
	// closed the connection (DISCONNECT 0x89 at the subscription): the next
	// address is not kept waiting.
	go func() {
		select {
		case <-t.loss.ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	sa, err := t.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "im/" + t.user + "/#", QoS: 1}}})
	if err != nil && t.loss.dead.Load() {
		err = t.loss.cause
	}
	if err == nil && (len(sa.Reasons) == 0 || sa.Reasons[0] >= 0x80) {
		err = fmt.Errorf("duet: subscription to im/%s/# refused", t.user)
	}
	return err
}

func (t *v5) publish(ctx context.Context, topic string, payload []byte, correlation string) error {
	// paho waits for the PUBACK until ctx ends, even on a dead connection.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-t.loss.ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	resp, err := t.c.Publish(ctx, &paho.Publish{
		Topic: topic, QoS: 1, Payload: payload,
		// PROTOCOL §3: MQTT 5 replies follow Response Topic and Correlation Data.
		Properties: &paho.PublishProperties{ResponseTopic: t.rsp, CorrelationData: []byte(correlation)},
	})
	if resp != nil && resp.ReasonCode >= 0x80 {
		return &pubackRefused{reason: resp.ReasonCode, info: resp.Properties.ReasonString}
	}
	if resp != nil {
		return nil
	}
	return err
}

func (t *v5) done() <-chan struct{} { return t.loss.ch }

func (t *v5) cause() error { return t.loss.cause }

func (t *v5) takenOver() bool {
	select {
	case <-t.told:
	case <-time.After(200 * time.Millisecond): // no DISCONNECT: the connection just broke
	}
	return t.replaced.Load()
}

func (t *v5) addr() string { return t.to }

func (t *v5) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = t.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	select {
	case <-t.c.Done():
	case <-ctx.Done():
	}
	t.loss.fire(errClosedHere)
}

// ---- MQTT 3.1.1 ----

type v3 struct {
	c       mqtt.Client
	loss    *lossSignal
	user    string
	timeout time.Duration
	to      string // the address dialled
}

func dialV3(ctx context.Context, cfg dialConfig) (transport, error) {
	t := &v3{loss: newLoss(), user: cfg.user, timeout: cfg.timeout, to: cfg.addr}
	broker := "tcp://" + cfg.addr
	switch {
	case isWebSocket(cfg.addr):
		broker = cfg.addr
	case cfg.tls != nil:
		broker = "ssl://" + cfg.addr
	}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetTLSConfig(cfg.tls).SetClientID(cfg.clientID).
		SetUsername(cfg.user).SetPassword(cfg.password).SetCleanSession(true).
		// The SDK reconnects itself: it must resubscribe and resynchronise.
		SetAutoReconnect(false).SetConnectRetry(false).
		SetOrderMatters(true).SetProtocolVersion(4).SetAutoAckDisabled(true).
		SetKeepAlive(cfg.keepAlive).SetConnectTimeout(cfg.timeout).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { t.loss.fire(err) })
	opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		ack := func() {}
		if m.Qos() > 0 {
			ack = m.Ack
		}
		cfg.onMessage(delivery{topic: m.Topic(), payload: m.Payload(), ack: ack})
	})
	t.c = mqtt.NewClient(opts)
	if err := wait(ctx, t.c.Connect(), cfg.timeout); err != nil {
		var rc byte
		switch {
		case errors.Is(err, packets.ErrorRefusedNotAuthorised):
			rc = 5
		case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
			rc = 4
		default:
			return nil, err
		}
		return nil, &RefusedError{Code: rc, Reason: err.Error()}
	}
	return t, nil
}

func (t *v3) subscribe(ctx context.Context) error {
	return wait(ctx, t.c.Subscribe("im/"+t.user+"/#", 1, nil), t.timeout)
}

func wait(ctx context.Context, tok mqtt.Token, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("duet: MQTT operation timed out after %v", timeout)
	}
}

func (t *v3) publish(ctx context.Context, topic string, payload []byte, _ string) error {
	tok := t.c.Publish(topic, 1, false, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.loss.ch:
		return errors.New("duet: connection lost")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *v3) done() <-chan struct{} { return t.loss.ch }

func (t *v3) cause() error { return t.loss.cause }

// takenOver: MQTT 3.1.1 has no way to say (see supervise).
func (t *v3) takenOver() bool { return false }

func (t *v3) addr() string { return t.to }

func (t *v3) close() {
	t.c.Disconnect(250)
	t.loss.fire(errClosedHere)
}
