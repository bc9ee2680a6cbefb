package main

// wireClient is a lean MQTT 3.1.1 client written for this tool from the
// OASIS specification (mqtt-v3.1.1-os): the load tool shares a small machine
// with the server it measures, so every microsecond of client CPU per message
// is taken from the server. It does only what the benchmark needs: CONNECT
// with clean session, one SUBSCRIBE at QoS 1, QoS 1 publishes, QoS 0/1
// receipt and keep-alive pings. Clause numbers in brackets are the
// specification's normative statements; a § number names a section that has
// none.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// MQTT control packet types (§2.2.1).
const (
	pktConnect    = 1
	pktConnack    = 2
	pktPublish    = 3
	pktPuback     = 4
	pktSubscribe  = 8
	pktSuback     = 9
	pktPingreq    = 12
	pktPingresp   = 13
	pktDisconnect = 14
)

const (
	maxRemLen = 268435455 // the largest value four length bytes can carry (§2.2.3)
	maxString = 65535     // a two-byte length prefix (§1.5.3)

	wireReadBuf = 4096
	// Buffers that grew past this for one big message are dropped after it,
	// so thousands of connections do not each pin their largest message.
	wireKeepBuf = 64 << 10
	// close waits this long for the DISCONNECT write and for the reader.
	wireCloseWait = time.Second
	topicCacheLen = 4 // a duet sender sees two topics, a receiver one
)

var (
	errRemLenTooLong = errors.New("malformed remaining length: more than 4 bytes (§2.2.3)")
	errRemLenShort   = errors.New("remaining length truncated")
	errWireClosed    = errors.New("client closed")
)

// appendRemLen appends n (0..maxRemLen) in the remaining-length encoding:
// seven bits per byte, least significant first, the top bit saying another
// byte follows (§2.2.3).
func appendRemLen(b []byte, n int) []byte {
	for {
		d := byte(n & 0x7f)
		n >>= 7
		if n == 0 {
			return append(b, d)
		}
		b = append(b, d|0x80)
	}
}

// decodeRemLen reads a remaining length from the start of b and returns it
// and how many bytes it took; errRemLenShort if b ends inside it.
func decodeRemLen(b []byte) (n, size int, err error) {
	shift := 0
	for i, d := range b {
		n |= int(d&0x7f) << shift
		if d&0x80 == 0 {
			return n, i + 1, nil
		}
		if i == 3 { // a fifth byte is never valid (§2.2.3)
			return 0, 0, errRemLenTooLong
		}
		shift += 7
	}
	return 0, 0, errRemLenShort
}

// readRemLen reads a remaining length from r, a byte at a time so that it
// never asks for bytes beyond the field.
func readRemLen(r io.ByteReader) (int, error) {
	var buf [4]byte
	for i := 0; ; i++ {
		d, err := r.ReadByte()
		if err != nil {
			if err == io.EOF && i > 0 {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		buf[i] = d
		n, _, err := decodeRemLen(buf[:i+1])
		if err != errRemLenShort {
			return n, err
		}
	}
}

// appendString appends a length-prefixed string (§1.5.3); the caller has
// checked len(s) <= maxString.
func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

// checkString refuses what §1.5.3 does not allow in an encoded string.
func checkString(what, s string) error {
	switch {
	case len(s) > maxString:
		return fmt.Errorf("%s is %d bytes, over the %d an MQTT string holds", what, len(s), maxString)
	case !utf8.ValidString(s): // [MQTT-1.5.3-1]
		return fmt.Errorf("%s is not valid UTF-8", what)
	case strings.IndexByte(s, 0) >= 0: // [MQTT-1.5.3-2]
		return fmt.Errorf("%s contains U+0000", what)
	}
	return nil
}

// appendConnect appends a CONNECT packet for a clean session.
func appendConnect(b []byte, clientID, username, password string, keepAlive uint16) []byte {
	n := 10 + 2 + len(clientID)
	flags := byte(0x02) // clean session; reserved bit 0 stays 0 [MQTT-3.1.2-3]
	if username != "" {
		n += 2 + len(username)
		flags |= 0x80
	}
	if password != "" { // only with a user name, checked in dialWire [MQTT-3.1.2-22]
		n += 2 + len(password)
		flags |= 0x40
	}
	b = append(b, pktConnect<<4)
	b = appendRemLen(b, n)
	b = appendString(b, "MQTT") // protocol name (§3.1.2.1)
	b = append(b, 4, flags)     // protocol level 4 is 3.1.1 (§3.1.2.2)
	b = append(b, byte(keepAlive>>8), byte(keepAlive))
	b = appendString(b, clientID) // first payload field [MQTT-3.1.3-3]
	if username != "" {
		b = appendString(b, username)
	}
	if password != "" {
		b = appendString(b, password)
	}
	return b
}

// appendSubscribe appends a SUBSCRIBE asking QoS 1 for every filter.
func appendSubscribe(b []byte, id uint16, filters []string) []byte {
	n := 2
	for _, f := range filters {
		n += 2 + len(f) + 1
	}
	b = append(b, pktSubscribe<<4|0x02) // reserved flags 0010 [MQTT-3.8.1-1]
	b = appendRemLen(b, n)
	b = append(b, byte(id>>8), byte(id))
	for _, f := range filters {
		b = appendString(b, f)
		b = append(b, 1)
	}
	return b
}

// appendPublish appends a QoS 1 PUBLISH, DUP 0, RETAIN 0 [MQTT-4.3.2-1].
func appendPublish(b []byte, id uint16, topic string, payload []byte) []byte {
	b = append(b, pktPublish<<4|1<<1)
	b = appendRemLen(b, 2+len(topic)+2+len(payload))
	b = appendString(b, topic)
	b = append(b, byte(id>>8), byte(id))
	return append(b, payload...)
}

func appendPuback(b []byte, id uint16) []byte {
	return append(b, pktPuback<<4, 2, byte(id>>8), byte(id)) // the PUBLISH's id [MQTT-2.3.1-6]
}

var (
	pingreqPacket    = []byte{pktPingreq << 4, 0}
	disconnectPacket = []byte{pktDisconnect << 4, 0}
)

// connackReason names a CONNACK return code (§3.2.2.3).
func connackReason(code byte) string {
	switch code {
	case 1:
		return "unacceptable protocol version"
	case 2:
		return "identifier rejected"
	case 3:
		return "server unavailable"
	case 4:
		return "bad user name or password"
	case 5:
		return "not authorized"
	}
	return "reserved return code"
}

// waiter is one publish waiting for its PUBACK. Whoever removes it from
// wireClient.inflight (the reader on PUBACK, fail on connection loss, or the
// publisher giving up) owns it; the first two send exactly one result on ch,
// which has room for it, so ch is empty again when the waiter is reused.
type waiter struct {
	ch    chan error
	timer *time.Timer // stopped between uses
}

type wireClient struct {
	conn      net.Conn
	timeout   time.Duration
	onMessage func(topic string, payload []byte)
	onLost    func(error)

	wmu       sync.Mutex // serialises writes to conn; guards the fields below
	wbuf      []byte
	wdeadline time.Time // when the write deadline was last moved

	mu       sync.Mutex // guards the fields below
	inflight map[uint16]*waiter
	nextID   uint16
	spare    []*waiter
	err      error // why the connection ended; set once
	up       bool  // dial returned the client: connection loss is onLost's business
	subID    uint16
	subAck   chan []byte // SUBACK return codes for subID

	closing   atomic.Bool
	pingOut   atomic.Bool  // a PINGREQ is unanswered
	pingResps atomic.Int64 // PINGRESPs received (tests watch this)
	abortErr  atomic.Pointer[error]
	done      chan struct{} // closed when the reader has exited

	// Reader goroutine only.
	br     *bufio.Reader
	big    []byte // bodies longer than br's buffer
	acks   []byte // PUBACKs not written yet
	topics [topicCacheLen]string
	nextTC int
}

func dialWire(ctx context.Context, o dialOptions) (client, error) {
	if o.password != "" && o.username == "" {
		return nil, errors.New("connect: a password needs a user name in MQTT 3.1.1 [MQTT-3.1.2-22]")
	}
	for _, f := range []struct{ what, s string }{{"client id", o.clientID}, {"user name", o.username}, {"password", o.password}} {
		if err := checkString(f.what, f.s); err != nil {
			return nil, fmt.Errorf("connect: %w", err)
		}
	}
	for _, t := range o.topics {
		if err := checkString("topic filter "+t, t); err != nil {
			return nil, fmt.Errorf("subscribe: %w", err)
		}
	}
	ka := o.keepAlive / time.Second
	if ka > 65535 {
		ka = 65535
	}

	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", o.hostport)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	c := &wireClient{
		conn:      conn,
		timeout:   o.timeout,
		onMessage: o.onMessage,
		onLost:    o.onLost,
		inflight:  make(map[uint16]*waiter),
		subAck:    make(chan []byte, 1),
		done:      make(chan struct{}),
		br:        bufio.NewReaderSize(conn, wireReadBuf),
	}
	if err := c.handshake(ctx, o, uint16(ka)); err != nil {
		_ = conn.Close()
		return nil, err
	}
	go c.readLoop()
	if ka > 0 {
		go c.pinger(o.keepAlive / 2)
	}
	if len(o.topics) > 0 {
		if err := c.subscribe(ctx, o.topics); err != nil {
			c.close()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
	}
	c.mu.Lock()
	err = c.err
	c.up = err == nil
	c.mu.Unlock()
	if err != nil {
		c.close()
		return nil, fmt.Errorf("connect: connection lost: %w", err)
	}
	return c, nil
}

// handshake sends CONNECT and reads the CONNACK, before the reader starts:
// nothing else may come first [MQTT-3.2.0-1].
func (c *wireClient) handshake(ctx context.Context, o dialOptions, keepAlive uint16) error {
	// A cancelled dial must not wait out the socket deadline.
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(dl)
	}
	pkt := appendConnect(nil, o.clientID, o.username, o.password, keepAlive)
	if _, err := c.conn.Write(pkt); err != nil { // the first packet is CONNECT [MQTT-3.1.0-1]
		return fmt.Errorf("connect: %w", ctxErr(ctx, err))
	}
	h, err := c.br.ReadByte()
	if err != nil {
		return fmt.Errorf("connect: waiting for CONNACK: %w", ctxErr(ctx, err))
	}
	n, err := readRemLen(c.br)
	if err != nil {
		return fmt.Errorf("connect: waiting for CONNACK: %w", ctxErr(ctx, err))
	}
	if h != pktConnack<<4 || n != 2 {
		return fmt.Errorf("connect: first packet from the server is 0x%02x with %d bytes, not a CONNACK [MQTT-3.2.0-1]", h, n)
	}
	var body [2]byte
	if _, err := io.ReadFull(c.br, body[:]); err != nil {
		return fmt.Errorf("connect: reading CONNACK: %w", ctxErr(ctx, err))
	}
	if code := body[1]; code != 0 {
		return fmt.Errorf("connect: server refused the connection: CONNACK return code 0x%02x (%s)", code, connackReason(code))
	}
	if body[0]&0x01 != 0 { // a clean session never resumes one [MQTT-3.2.2-1]
		return errors.New("connect: CONNACK reports a stored session for a clean-session connect [MQTT-3.2.2-1]")
	}
	if !stop() {
		return fmt.Errorf("connect: %w", ctx.Err())
	}
	return c.conn.SetDeadline(time.Time{})
}

// ctxErr prefers the context's reason over the deadline error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (c *wireClient) subscribe(ctx context.Context, topics []string) error {
	c.mu.Lock()
	c.subID = c.newIDLocked()
	id := c.subID
	c.mu.Unlock()
	if err := c.write(appendSubscribe(nil, id, topics)); err != nil {
		return err
	}
	var codes []byte
	select {
	case codes = <-c.subAck:
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
	if len(codes) != len(topics) { // one code per filter [MQTT-3.8.4-5]
		return fmt.Errorf("SUBACK has %d return codes for %d topic filters [MQTT-3.8.4-5]", len(codes), len(topics))
	}
	var err error
	for i, code := range codes { // in the SUBSCRIBE's order [MQTT-3.9.3-1]
		if code >= 0x80 {
			err = errors.Join(err, fmt.Errorf("%s: refused (0x%02x)", topics[i], code))
		} else if code > 2 { // [MQTT-3.9.3-2]
			err = errors.Join(err, fmt.Errorf("%s: reserved SUBACK return code 0x%02x [MQTT-3.9.3-2]", topics[i], code))
		}
	}
	return err
}

// newIDLocked returns a packet identifier that is neither 0 [MQTT-2.3.1-1]
// nor in flight [MQTT-2.3.1-2]. Publishes in flight are bounded by the
// window (at most maxWindow), far fewer than the 65535 identifiers.
func (c *wireClient) newIDLocked() uint16 {
	for {
		c.nextID++
		if c.nextID == 0 {
			continue
		}
		if _, busy := c.inflight[c.nextID]; !busy && c.nextID != c.subID {
			return c.nextID
		}
	}
}

func (c *wireClient) publish(ctx context.Context, topic string, payload []byte) error {
	if len(topic) > maxString {
		return fmt.Errorf("topic is %d bytes, over the %d an MQTT string holds", len(topic), maxString)
	}
	if n := 2 + len(topic) + 2 + len(payload); n > maxRemLen {
		return fmt.Errorf("PUBLISH of %d bytes exceeds the MQTT maximum %d", n, maxRemLen)
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	id := c.newIDLocked()
	var w *waiter
	if k := len(c.spare); k > 0 {
		w = c.spare[k-1]
		c.spare = c.spare[:k-1]
	} else {
		w = &waiter{ch: make(chan error, 1), timer: time.NewTimer(time.Hour)}
		w.timer.Stop()
	}
	c.inflight[id] = w // unacknowledged until its PUBACK [MQTT-4.3.2-1]
	c.mu.Unlock()

	c.wmu.Lock()
	c.wbuf = appendPublish(c.wbuf[:0], id, topic, payload)
	err := c.writeLocked(c.wbuf)
	if cap(c.wbuf) > wireKeepBuf {
		c.wbuf = nil
	}
	c.wmu.Unlock()

	if err == nil {
		w.timer.Reset(c.timeout)
		select {
		case err = <-w.ch:
			w.timer.Stop()
			c.release(w)
			return err
		case <-ctx.Done():
			err = ctx.Err()
		case <-w.timer.C:
			err = fmt.Errorf("no ack within %v", c.timeout)
		}
		w.timer.Stop() // since Go 1.23 no stale tick survives Stop
	}
	c.mu.Lock()
	if c.inflight[id] == w {
		delete(c.inflight, id)
		c.spare = append(c.spare, w)
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()
	// The PUBACK (or the connection's end) won the race and sent a result.
	err = <-w.ch
	c.release(w)
	return err
}

func (c *wireClient) release(w *waiter) {
	c.mu.Lock()
	c.spare = append(c.spare, w)
	c.mu.Unlock()
}

// write sends one encoded packet.
func (c *wireClient) write(pkt []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(pkt)
}

// writeLocked writes with c.wmu held. A failed write ends the connection:
// part of a packet may be on the wire, so nothing can follow it.
func (c *wireClient) writeLocked(pkt []byte) error {
	if c.closing.Load() {
		return errWireClosed
	}
	// Moving the deadline costs a runtime timer update per call; keeping it
	// between 7/8 and all of the timeout ahead bounds a stuck write just as
	// well.
	if now := time.Now(); now.Sub(c.wdeadline) > c.timeout/8 {
		if err := c.conn.SetWriteDeadline(now.Add(c.timeout)); err != nil {
			c.abort(err)
			return err
		}
		c.wdeadline = now
		if c.closing.Load() { // close's short deadline may just have been overwritten
			return errWireClosed
		}
	}
	if _, err := c.conn.Write(pkt); err != nil {
		c.abort(err)
		return err
	}
	return nil
}

// abort ends the connection for err; the reader reports it.
func (c *wireClient) abort(err error) {
	c.abortErr.CompareAndSwap(nil, &err)
	_ = c.conn.Close()
}

func (c *wireClient) pinger(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			// Sending every half keep-alive keeps the gap between our packets
			// under the keep-alive [MQTT-3.1.2-23]; a PINGREQ still
			// unanswered one interval later means the server is gone (§3.1.2.10).
			if c.pingOut.Swap(true) {
				c.abort(fmt.Errorf("no PINGRESP within %v", every))
				return
			}
			if err := c.write(pingreqPacket); err != nil {
				return
			}
		}
	}
}

func (c *wireClient) readLoop() {
	defer close(c.done)
	err := c.readPackets()
	if p := c.abortErr.Load(); p != nil {
		err = *p
	}
	_ = c.conn.Close() // a protocol error closes the connection [MQTT-4.8.0-1]
	c.mu.Lock()
	c.err = err
	for id, w := range c.inflight {
		delete(c.inflight, id)
		w.ch <- err
	}
	report := c.up && !c.closing.Load()
	c.mu.Unlock()
	if report && c.onLost != nil {
		c.onLost(err)
	}
}

// readPackets reads and handles packets until the connection fails.
func (c *wireClient) readPackets() error {
	for {
		// PUBACKs wait while more complete packets are buffered, so a burst
		// is acknowledged with one write; never while the reader could block.
		if len(c.acks) > 0 && !c.packetBuffered() {
			err := c.write(c.acks)
			c.acks = c.acks[:0]
			if err != nil && err != errWireClosed { // closing: close() ends the socket after its DISCONNECT
				return err
			}
		}
		h, err := c.br.ReadByte()
		if err != nil {
			return err
		}
		n, err := readRemLen(c.br)
		if err != nil {
			return err
		}
		var body []byte
		peeked := n <= c.br.Size()
		if peeked { // valid until the next read from br
			if body, err = c.br.Peek(n); err != nil {
				return err
			}
		} else {
			if cap(c.big) < n {
				c.big = make([]byte, n)
			}
			body = c.big[:n]
			if _, err := io.ReadFull(c.br, body); err != nil {
				return err
			}
		}
		if err := c.handle(h, body); err != nil {
			return err
		}
		if peeked {
			_, _ = c.br.Discard(n)
		} else if cap(c.big) > wireKeepBuf {
			c.big = nil
		}
	}
}

// packetBuffered reports whether a whole packet is already in br.
func (c *wireClient) packetBuffered() bool {
	avail := c.br.Buffered()
	if avail < 2 {
		return false
	}
	hdr, _ := c.br.Peek(min(avail, 5))
	n, size, err := decodeRemLen(hdr[1:])
	return err == nil && avail >= 1+size+n
}

func (c *wireClient) handle(h byte, body []byte) error {
	switch h >> 4 {
	case pktPublish:
		return c.handlePublish(h, body)
	case pktPuback:
		if h&0x0f != 0 || len(body) != 2 { // [MQTT-2.2.2-2]
			return fmt.Errorf("malformed PUBACK (flags 0x%x, %d bytes) [MQTT-2.2.2-2]", h&0x0f, len(body))
		}
		id := uint16(body[0])<<8 | uint16(body[1])
		c.mu.Lock()
		if w := c.inflight[id]; w != nil { // else its publish gave up already
			delete(c.inflight, id) // the id is free again [MQTT-2.3.1-3]
			w.ch <- nil
		}
		c.mu.Unlock()
		return nil
	case pktSuback:
		if h&0x0f != 0 || len(body) < 2 {
			return fmt.Errorf("malformed SUBACK (flags 0x%x, %d bytes) [MQTT-2.2.2-2]", h&0x0f, len(body))
		}
		id := uint16(body[0])<<8 | uint16(body[1])
		c.mu.Lock()
		want := c.subID
		c.subID = 0
		c.mu.Unlock()
		if id != want || want == 0 { // [MQTT-3.8.4-2]
			return fmt.Errorf("SUBACK for packet id %d, which was not subscribing [MQTT-3.8.4-2]", id)
		}
		c.subAck <- bytes.Clone(body[2:])
		return nil
	case pktPingresp:
		if h&0x0f != 0 || len(body) != 0 {
			return fmt.Errorf("malformed PINGRESP (flags 0x%x, %d bytes) [MQTT-2.2.2-2]", h&0x0f, len(body))
		}
		c.pingOut.Store(false)
		c.pingResps.Add(1)
		return nil
	}
	return fmt.Errorf("unexpected packet type %d from the server [MQTT-4.8.0-1]", h>>4)
}

func (c *wireClient) handlePublish(h byte, body []byte) error {
	qos := (h >> 1) & 3
	switch {
	case qos == 3: // [MQTT-3.3.1-4]
		return errors.New("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
	case qos == 2: // every subscription asked for QoS 1, so the server may not send 2 (§3.8.4)
		return errors.New("PUBLISH with QoS 2 on a QoS 1 subscription")
	case qos == 0 && h&0x08 != 0: // [MQTT-3.3.1-2]
		return errors.New("PUBLISH with QoS 0 and DUP set [MQTT-3.3.1-2]")
	}
	if len(body) < 2 {
		return errors.New("malformed PUBLISH: no topic name [MQTT-3.3.2-1]")
	}
	tl := int(body[0])<<8 | int(body[1])
	if 2+tl > len(body) {
		return errors.New("malformed PUBLISH: topic name longer than the packet")
	}
	topic, err := c.topicString(body[2 : 2+tl])
	if err != nil {
		return err
	}
	rest := body[2+tl:]
	var id uint16
	if qos == 1 {
		if len(rest) < 2 {
			return errors.New("malformed PUBLISH: QoS 1 without a packet id")
		}
		id = uint16(rest[0])<<8 | uint16(rest[1])
		if id == 0 {
			return errors.New("PUBLISH with packet id 0 [MQTT-2.3.1-1]")
		}
		rest = rest[2:]
	}
	if c.onMessage != nil {
		c.onMessage(topic, rest)
	}
	if qos == 1 { // acknowledged after the handler took the message [MQTT-3.3.4-1] [MQTT-4.3.2-2]
		c.acks = appendPuback(c.acks, id)
	}
	return nil
}

// topicString returns b as a string, reusing one made for an earlier message
// on the same topic: a connection sees one or two topics, and a new string
// per message would be the receive path's only allocation.
func (c *wireClient) topicString(b []byte) (string, error) {
	for _, s := range c.topics {
		if s == string(b) { // compiles to a comparison without a copy
			return s, nil
		}
	}
	s := string(b)
	if err := checkString("topic name", s); err != nil {
		return "", fmt.Errorf("PUBLISH: %w", err)
	}
	if strings.ContainsAny(s, "+#") { // [MQTT-3.3.2-2]
		return "", fmt.Errorf("PUBLISH topic %q contains a wildcard [MQTT-3.3.2-2]", s)
	}
	c.topics[c.nextTC] = s
	c.nextTC = (c.nextTC + 1) % topicCacheLen
	return s, nil
}

func (c *wireClient) close() {
	if !c.closing.Swap(true) {
		// A write stuck on a full socket would hold wmu for up to the
		// timeout; the short deadline frees it, and later writers see closing.
		_ = c.conn.SetWriteDeadline(time.Now().Add(wireCloseWait))
		c.wmu.Lock()
		_, _ = c.conn.Write(disconnectPacket)
		c.wmu.Unlock()
		_ = c.conn.Close() // nothing more after DISCONNECT [MQTT-3.14.4-1] [MQTT-3.14.4-2]
	}
	c.waitReader()
}

func (c *wireClient) waitReader() {
	t := time.NewTimer(wireCloseWait)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	}
}
