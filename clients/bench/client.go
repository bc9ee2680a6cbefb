package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// client is the little the benchmark needs from an MQTT connection. A client
// is connected and subscribed when dial returns; publish is safe for
// concurrent use.
type client interface {
	// publish sends a QoS 1 PUBLISH and blocks until its PUBACK arrives,
	// ctx ends or the ack timeout passes.
	publish(ctx context.Context, topic string, payload []byte) error
	// close disconnects; it waits at most a short, fixed time.
	close()
}

type dialOptions struct {
	hostport   string // host:port of the broker
	v5         bool
	wire       bool // MQTT 3.1.1 through the built-in client (wire.go), not paho.mqtt.golang
	clientID   string
	username   string
	password   string
	topics     []string // subscribed at QoS 1 before dial returns
	timeout    time.Duration
	keepAlive  time.Duration
	receiveMax uint16 // MQTT 5 Receive Maximum (broker→client QoS 1 in flight); 0 = omit

	// onMessage is called for every received PUBLISH, one at a time per
	// client, before it is acknowledged. It must not block. payload may
	// alias the client's read buffer (the wire client does this to avoid a
	// copy per message): it is valid only until onMessage returns, so what
	// is kept must be copied. run.onReceiver and run.onSender only parse it.
	onMessage func(topic string, payload []byte)
	// onLost is called if the connection drops before close.
	onLost func(error)
}

func dial(ctx context.Context, o dialOptions) (client, error) {
	switch {
	case o.v5 && o.wire:
		return nil, errors.New("the wire client speaks MQTT 3.1.1 only")
	case o.v5:
		return dialV5(ctx, o)
	case o.wire:
		return dialWire(ctx, o)
	}
	return dialV3(ctx, o)
}

// waitToken waits for a paho.mqtt.golang token, bounded by ctx and timeout.
func waitToken(ctx context.Context, t mqtt.Token, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("no ack within %v", timeout)
	}
}

// v3Client speaks MQTT 3.1.1 through github.com/eclipse/paho.mqtt.golang.
type v3Client struct {
	c       mqtt.Client
	timeout time.Duration
}

func dialV3(ctx context.Context, o dialOptions) (client, error) {
	opts := mqtt.NewClientOptions().
		AddBroker("tcp://" + o.hostport).
		SetProtocolVersion(4).
		SetClientID(o.clientID).
		SetUsername(o.username).
		SetPassword(o.password).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetConnectTimeout(o.timeout).
		SetWriteTimeout(o.timeout).
		SetKeepAlive(o.keepAlive).
		SetOrderMatters(true). // handlers run in order on the router goroutine; ours never block
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			if o.onLost != nil {
				o.onLost(err)
			}
		})
	c := mqtt.NewClient(opts)
	if err := waitToken(ctx, c.Connect(), o.timeout); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("connect: %w", err)
	}
	if len(o.topics) == 0 {
		return &v3Client{c: c, timeout: o.timeout}, nil
	}
	filters := make(map[string]byte, len(o.topics))
	for _, t := range o.topics {
		filters[t] = 1
	}
	tok := c.SubscribeMultiple(filters, func(_ mqtt.Client, m mqtt.Message) {
		o.onMessage(m.Topic(), m.Payload())
	})
	if err := waitToken(ctx, tok, o.timeout); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for topic, code := range st.Result() {
			if code >= 0x80 {
				c.Disconnect(0)
				return nil, fmt.Errorf("subscribe %s: refused (0x%02x)", topic, code)
			}
		}
	}
	return &v3Client{c: c, timeout: o.timeout}, nil
}

func (v *v3Client) publish(ctx context.Context, topic string, payload []byte) error {
	return waitToken(ctx, v.c.Publish(topic, 1, false, payload), v.timeout)
}

func (v *v3Client) close() { v.c.Disconnect(100) }

// v5Client speaks MQTT 5 through github.com/eclipse/paho.golang/paho (no
// autopaho: a benchmark connection that drops must count as lost, not
// silently reconnect).
type v5Client struct {
	c       *paho.Client
	timeout time.Duration
}

func dialV5(ctx context.Context, o dialOptions) (client, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	d := net.Dialer{Timeout: o.timeout}
	conn, err := d.DialContext(ctx, "tcp", o.hostport)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	lost := func(err error) {
		if o.onLost != nil {
			o.onLost(err)
		}
	}
	c := paho.NewClient(paho.ClientConfig{
		ClientID:      o.clientID,
		Conn:          packets.NewThreadSafeConn(conn), // publishes are written from several goroutines
		PacketTimeout: o.timeout,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				o.onMessage(pr.Packet.Topic, pr.Packet.Payload)
				return true, nil
			},
		},
		OnClientError: lost,
		OnServerDisconnect: func(d *paho.Disconnect) {
			lost(fmt.Errorf("server sent DISCONNECT 0x%02x", d.ReasonCode))
		},
	})
	props := &paho.ConnectProperties{}
	if o.receiveMax > 0 {
		rm := o.receiveMax
		props.ReceiveMaximum = &rm
	}
	cp := &paho.Connect{
		ClientID:     o.clientID,
		KeepAlive:    uint16(o.keepAlive / time.Second),
		CleanStart:   true,
		Username:     o.username,
		UsernameFlag: o.username != "",
		Password:     []byte(o.password),
		PasswordFlag: o.password != "",
		Properties:   props,
	}
	if _, err := c.Connect(ctx, cp); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	if len(o.topics) == 0 {
		return &v5Client{c: c, timeout: o.timeout}, nil
	}
	sub := &paho.Subscribe{}
	for _, t := range o.topics {
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: t, QoS: 1})
	}
	sa, err := c.Subscribe(ctx, sub)
	if err == nil {
		for i, code := range sa.Reasons {
			if code >= 0x80 && i < len(o.topics) {
				err = errors.Join(err, fmt.Errorf("%s refused (0x%02x)", o.topics[i], code))
			}
		}
	}
	if err != nil {
		_ = c.Disconnect(&paho.Disconnect{})
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	return &v5Client{c: c, timeout: o.timeout}, nil
}

func (v *v5Client) publish(ctx context.Context, topic string, payload []byte) error {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	_, err := v.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
	return err
}

func (v *v5Client) close() {
	_ = v.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	select {
	case <-v.c.Done():
	case <-time.After(time.Second):
	}
}
