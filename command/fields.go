package command

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// fields is a request body decoded one level deep, so each field can be
// type-checked on its own and refused with its own Tencent code (a number
// where a string belongs is 90003 for To_Account but 90005 for MsgRandom).
type fields map[string]json.RawMessage

// parseObject decodes body as a JSON object; a body that is not one gets
// code (90001 for openim, 40001 for profile, …).
func parseObject(body []byte, code int) (fields, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, Errorf(code, "request body must be a JSON object")
	}
	var f fields
	if err := json.Unmarshal(body, &f); err != nil {
		return nil, Errorf(code, "Fail to Parse json data of body, Please check it: %v", err)
	}
	return f, nil
}

func (f fields) has(name string) bool {
	v, ok := f[name]
	return ok && !bytes.Equal(v, []byte("null"))
}

// str returns a string field; ok is false when the field is present but not
// a string.
func (f fields) str(name string) (v string, present, ok bool) {
	if !f.has(name) {
		return "", false, true
	}
	if err := json.Unmarshal(f[name], &v); err != nil {
		return "", true, false
	}
	return v, true, true
}

// integer returns an integral number field in [min, max].
func (f fields) integer(name string, min, max int64) (v int64, present, ok bool) {
	if !f.has(name) {
		return 0, false, true
	}
	raw := f[name]
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
func (f fields) strings(name string) (v []string, present, ok bool) {
	if !f.has(name) {
		return nil, false, true
	}
	if err := json.Unmarshal(f[name], &v); err != nil {
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
