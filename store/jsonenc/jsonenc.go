// Package jsonenc appends JSON by hand, for the few records Duet writes
// with every message (the timeline event, the history record, conversation
// entries), where encoding/json's reflection and its two passes over
// embedded raw JSON (validate, then compact) showed in profiles. Its output
// decodes, with encoding/json, to the same values as encoding/json's own;
// the callers' tests hold each encoder to that.
package jsonenc

import (
	"bytes"
	"encoding/json"
)

// String appends s as a JSON string. Printable ASCII is copied; anything
// else is escaped by encoding/json itself, with or without its HTML
// escaping of <, > and & (json.Marshal escapes them, an Encoder may not).
func String(b []byte, s string, escapeHTML bool) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || (escapeHTML && (c == '<' || c == '>' || c == '&')) {
			return slow(b, s, escapeHTML)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func slow(b []byte, s string, escapeHTML bool) []byte {
	buf := bytes.NewBuffer(b)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(s) // a string always encodes
	out := buf.Bytes()
	return out[:len(out)-1] // Encode's newline
}

// Raw appends the JSON document raw, compacted (one pass, which also
// validates it), or null when raw is empty, as encoding/json does for a
// json.RawMessage.
func Raw(b []byte, raw []byte) ([]byte, error) {
	if len(raw) == 0 {
		return append(b, "null"...), nil
	}
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, raw); err != nil {
		return b, err
	}
	return buf.Bytes(), nil
}
