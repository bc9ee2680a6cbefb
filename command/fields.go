package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// fields is a request body decoded one level deep, so each field can be
// type-checked on its own and refused with its own Tencent code (a number
// where a string belongs is 90003 for To_Account but 90005 for MsgRandom).
//
// Field names match case-insensitively, as Tencent's server does (a widely
// used client sends recentcontact/delete's Type as "type"; docs/rest.md,
// "Field names") and as encoding/json does for the nested items decoded
// into structs: the exact spelling is preferred, otherwise any spelling
// that differs only in case. A body that names a field twice in different
// cases keeps the last one, as encoding/json would. A name found by its
// case-folded spelling is stored back under the asked-for spelling, so
// later plain index reads (f["MsgBody"] after f.has("MsgBody")) see it;
// lookups of names not yet seen therefore write to the map and must not
// run concurrently.
type fields map[string]json.RawMessage

// UnmarshalJSON decodes an object; a JSON null leaves f nil, as for a
// plain map.
func (f *fields) UnmarshalJSON(b []byte) error {
	m, err := decodeFields(b)
	*f = m
	return err
}

// decodeFields is UnmarshalJSON's work.
func decodeFields(b []byte) (fields, error) {
	f, _, err := decodeFieldsID(b)
	return f, err
}

// decodeFieldsID is decodeFields that also returns the raw value of the
// key spelled exactly ReqId (the last one; nil when absent), read before
// case-folded duplicates are resolved: the MQTT envelope's ReqId is matched
// exactly, as clients write it.
func decodeFieldsID(b []byte) (fields, json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, nil, err
	}
	id := m["ReqId"]
	if foldDuplicates(m) {
		// Rare: keep, per case-folded name, the last spelling in document
		// order (a map decode cannot tell which came last).
		var err error
		if m, err = decodeLastFoldWins(b); err != nil {
			return nil, nil, err
		}
	}
	return m, id, nil
}

// foldDuplicates reports whether two keys of m differ only in case.
// Request objects are small, so pairwise comparison allocates nothing on
// the common path.
func foldDuplicates(m map[string]json.RawMessage) bool {
	if len(m) < 2 {
		return false
	}
	if len(m) > 32 {
		seen := make(map[string]struct{}, len(m))
		for k := range m {
			l := strings.ToLower(k)
			if _, dup := seen[l]; dup {
				return true
			}
			seen[l] = struct{}{}
		}
		return false
	}
	var keys [32]string
	n := 0
	for k := range m {
		for _, o := range keys[:n] {
			if strings.EqualFold(k, o) {
				return true
			}
		}
		keys[n] = k
		n++
	}
	return false
}

// decodeLastFoldWins decodes the object b keeping, for each name, the
// value of its last occurrence in any case, under that occurrence's
// spelling.
func decodeLastFoldWins(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil { // {
		return nil, err
	}
	out := map[string]json.RawMessage{}
	byFold := map[string]string{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		l := strings.ToLower(k)
		if old, ok := byFold[l]; ok {
			delete(out, old)
		}
		byFold[l] = k
		out[k] = v
	}
	return out, nil
}

// lookup returns the raw value of the field spelled name in any case.
func (f fields) lookup(name string) (json.RawMessage, bool) {
	if v, ok := f[name]; ok {
		return v, true
	}
	for k, v := range f {
		if strings.EqualFold(k, name) {
			delete(f, k)
			f[name] = v
			return v, true
		}
	}
	return nil, false
}

// raw returns the raw value of a field (nil when absent).
func (f fields) raw(name string) json.RawMessage {
	v, _ := f.lookup(name)
	return v
}

// errNotObject is a body that is not a JSON object at all.
var errNotObject = errors.New("not an object")

// decodeObject decodes a request body, which must be a JSON object, and
// returns its ReqId's raw value too (see decodeFieldsID). Exec calls it
// once per request; it decodes the body directly, not through
// fields.UnmarshalJSON, which encoding/json would make scan the body twice
// more (once to find the value's end, once in the nested Unmarshal).
func decodeObject(body []byte) (fields, json.RawMessage, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, nil, errNotObject
	}
	return decodeFieldsID(body)
}

// bodyError is the refusal of a body decodeObject could not decode, with
// the command's code (90001 for openim, 40001 for profile, …).
func bodyError(code int, err error) *Error {
	if errors.Is(err, errNotObject) {
		return Errorf(code, "request body must be a JSON object")
	}
	return Errorf(code, "Fail to Parse json data of body, Please check it: %v", err)
}

// RequestID is the top-level ReqId of a request body, as Exec sets
// Caller.ReqID: a String's value, any other JSON value's text (a number
// keeps its digits as sent), "" when absent, null or when the body is not a
// JSON object. The MQTT transport uses it for the refusals it makes
// without running the command (too long, shutting down).
func RequestID(body []byte) string {
	_, id, err := decodeObject(body)
	if err != nil {
		return ""
	}
	return reqIDText(id)
}

func reqIDText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	if raw[0] != '"' {
		return string(raw)
	}
	v, _ := stringValue(raw)
	return v
}

// stringValue decodes the JSON String raw; ok is false when raw is not
// one. A String from a decoded body without escapes and in valid UTF-8 is
// its text between the quotes, which spares a request's every String an
// Unmarshal.
func stringValue(raw json.RawMessage) (v string, ok bool) {
	if len(raw) >= 2 && raw[0] == '"' {
		if in := raw[1 : len(raw)-1]; bytes.IndexByte(in, '\\') < 0 && bytes.IndexByte(in, '"') < 0 && utf8.Valid(in) {
			return string(in), true
		}
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", false
	}
	return v, true
}

func (f fields) has(name string) bool {
	v, ok := f.lookup(name)
	return ok && !bytes.Equal(v, []byte("null"))
}

// str returns a string field; ok is false when the field is present but not
// a string.
func (f fields) str(name string) (v string, present, ok bool) {
	if !f.has(name) {
		return "", false, true
	}
	v, ok = stringValue(f.raw(name))
	return v, true, ok
}

// integer returns an integral number field in [min, max].
func (f fields) integer(name string, min, max int64) (v int64, present, ok bool) {
	if !f.has(name) {
		return 0, false, true
	}
	raw := f.raw(name)
	if len(raw) == 0 || raw[0] == '"' || raw[0] == '{' || raw[0] == '[' {
		return 0, true, false
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		// Integral values written as 1e3 or 5.0 are still integers.
		fl, ferr := strconv.ParseFloat(string(raw), 64)
		if ferr != nil || fl != float64(int64(fl)) {
			return 0, true, false
		}
		n = int64(fl)
	}
	if n < min || n > max {
		return n, true, false
	}
	return n, true, true
}

// strings returns an array-of-strings field.
func (f fields) strings(name string) ([]string, bool, bool) {
	if !f.has(name) {
		return nil, false, true
	}
	var v []string // here, not a named result: only a present field costs an allocation
	if err := json.Unmarshal(f.raw(name), &v); err != nil {
		return nil, true, false
	}
	return v, true, true
}

// ValidUserID reports whether id is a well-formed UserID (PROTOCOL §1):
// 1–32 bytes of [A-Za-z0-9_-@.].
func ValidUserID(id string) bool {
	if len(id) == 0 || len(id) > 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '_' || c == '-' || c == '@' || c == '.':
		default:
			return false
		}
	}
	return true
}
