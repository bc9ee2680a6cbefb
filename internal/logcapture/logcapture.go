// Package logcapture is a slog logger whose output tests read back: a test
// asserts what a user would find in the server's log.
package logcapture

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
)

// Buffer holds the text lines a logger from New wrote.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines is what was logged so far, one entry per record.
func (b *Buffer) Lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimRight(b.buf.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// Matching is the lines that contain every one of parts.
func (b *Buffer) Matching(parts ...string) []string {
	var out []string
next:
	for _, l := range b.Lines() {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// New is a logger at level writing slog's text format into the Buffer.
func New(level slog.Level) (*slog.Logger, *Buffer) {
	b := new(Buffer)
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: level})), b
}
