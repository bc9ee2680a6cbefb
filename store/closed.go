package store

import (
	"errors"

	"github.com/cockroachdb/pebble"
)

// IsClosed reports whether v — an error, or a value recovered from a panic
// — says the store is closed: ErrClosed from a write, or Pebble's
// ErrClosed, with which a read of a closed database panics.
func IsClosed(v any) bool {
	err, ok := v.(error)
	return ok && (errors.Is(err, ErrClosed) || errors.Is(err, pebble.ErrClosed))
}
