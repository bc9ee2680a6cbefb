// Package usersig makes and verifies Tencent Cloud IM UserSigs (TLSSigAPIv2,
// HMAC-SHA256), the password every Duet login and REST call carries.
//
// A UserSig is base64url-ish(zlib(JSON)) where the JSON holds the identifier,
// the SDKAppID, the issue time, the validity and an HMAC over those four
// values. Clients in the wild differ in zlib level, JSON key order and
// whitespace, so Verify parses generically and depends on none of them.
package usersig

import (
	"bytes"
	"compress/zlib"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Errors returned by Verify. Each maps to one Tencent error code (see Code).
var (
	ErrEmpty      = errors.New("usersig: empty")                             // 70002
	ErrMalformed  = errors.New("usersig: malformed")                         // 70003
	ErrExpired    = errors.New("usersig: expired")                           // 70001
	ErrSignature  = errors.New("usersig: signature does not match")          // 70009
	ErrIdentifier = errors.New("usersig: identifier does not match")         // 70013
	ErrSDKAppID   = errors.New("usersig: sdkappid does not match")           // 70014
	ErrRevoked    = errors.New("usersig: issued before the user was kicked") // 70001 semantics: log in again
)

// Code is the Tencent error code for a Verify error, or 70003 for anything else.
func Code(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrEmpty):
		return 70002
	case errors.Is(err, ErrExpired), errors.Is(err, ErrRevoked):
		return 70001
	case errors.Is(err, ErrSignature):
		return 70009
	case errors.Is(err, ErrIdentifier):
		return 70013
	case errors.Is(err, ErrSDKAppID):
		return 70014
	default:
		return 70003
	}
}

// Sig is the decoded content of a UserSig.
type Sig struct {
	Identifier string
	SDKAppID   uint64
	Time       int64 // issue time, Unix seconds
	Expire     int64 // validity, seconds after Time
	UserBuf    []byte
	HasUserBuf bool
	sig        []byte
}

// ExpiresAt is the instant after which the sig is refused.
func (s *Sig) ExpiresAt() time.Time { return time.Unix(s.Time+s.Expire, 0) }

// IssuedAt is the sig's TLS.time.
func (s *Sig) IssuedAt() time.Time { return time.Unix(s.Time, 0) }

// hmacBase64 computes TLS.sig over the string of reference §2.2.
func hmacBase64(key string, identifier string, sdkappid uint64, t, expire int64, userbuf []byte, hasUserBuf bool) []byte {
	var b strings.Builder
	b.WriteString("TLS.identifier:" + identifier + "\n")
	b.WriteString("TLS.sdkappid:" + strconv.FormatUint(sdkappid, 10) + "\n")
	b.WriteString("TLS.time:" + strconv.FormatInt(t, 10) + "\n")
	b.WriteString("TLS.expire:" + strconv.FormatInt(expire, 10) + "\n")
	if hasUserBuf {
		b.WriteString("TLS.userbuf:" + base64.StdEncoding.EncodeToString(userbuf) + "\n")
	}
	h := hmac.New(sha256.New, []byte(key))
	h.Write([]byte(b.String()))
	return h.Sum(nil)
}

// Signature returns base64(TLS.sig) for the given values; exported for the
// reference's fixed test vectors.
func Signature(key, identifier string, sdkappid uint64, t, expire int64, userbuf []byte) string {
	return base64.StdEncoding.EncodeToString(hmacBase64(key, identifier, sdkappid, t, expire, userbuf, userbuf != nil))
}

// Gen makes a UserSig for identifier valid for expire seconds from now.
func Gen(sdkappid uint64, key, identifier string, expire int64, now time.Time) (string, error) {
	t := now.Unix()
	doc := map[string]any{
		"TLS.ver":        "2.0",
		"TLS.identifier": identifier,
		"TLS.sdkappid":   sdkappid,
		"TLS.expire":     expire,
		"TLS.time":       t,
		"TLS.sig":        Signature(key, identifier, sdkappid, t, expire, nil),
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return "", err
	}
	var z bytes.Buffer
	w, err := zlib.NewWriterLevel(&z, zlib.BestCompression)
	if err != nil {
		return "", err
	}
	if _, err := w.Write(raw); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	return encode(z.Bytes()), nil
}

// encode is standard base64 with + / = replaced by * - _ (reference §2.4).
func encode(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	return strings.NewReplacer("+", "*", "/", "-", "=", "_").Replace(s)
}

func decode(s string) ([]byte, error) {
	s = strings.NewReplacer("*", "+", "-", "/", "_", "=").Replace(s)
	return base64.StdEncoding.DecodeString(s)
}

// maxInflated bounds the JSON a sig may inflate to, so a zip bomb in a
// password field cannot cost memory.
const maxInflated = 4096

// inflaters keeps zlib readers for reuse: a new one allocates about 40 KB
// (its 32 KB window), and every login parses a sig. As garbage, that was
// the largest part of what a login left behind (issue 11 §4).
var inflaters sync.Pool

// inflate decompresses z, reading at most maxInflated+1 bytes.
func inflate(z []byte) ([]byte, error) {
	src := bytes.NewReader(z)
	var r io.ReadCloser
	if v, ok := inflaters.Get().(io.ReadCloser); ok {
		r = v
		if err := r.(zlib.Resetter).Reset(src, nil); err != nil {
			inflaters.Put(r) // a failed Reset leaves it ready for the next
			return nil, err
		}
	} else {
		var err error
		if r, err = zlib.NewReader(src); err != nil {
			return nil, err
		}
	}
	raw, err := io.ReadAll(io.LimitReader(r, maxInflated+1))
	inflaters.Put(r)
	return raw, err
}

// Parse decodes a UserSig without checking its signature or times.
func Parse(userSig string) (*Sig, error) {
	if userSig == "" {
		return nil, ErrEmpty
	}
	if len(userSig) > 2048 {
		return nil, fmt.Errorf("%w: too long", ErrMalformed)
	}
	z, err := decode(userSig)
	if err != nil {
		return nil, fmt.Errorf("%w: base64: %v", ErrMalformed, err)
	}
	raw, err := inflate(z)
	if err != nil {
		return nil, fmt.Errorf("%w: zlib: %v", ErrMalformed, err)
	}
	if len(raw) > maxInflated {
		return nil, fmt.Errorf("%w: too large", ErrMalformed)
	}
	var doc map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: json: %v", ErrMalformed, err)
	}
	s := &Sig{}
	if s.Identifier, err = str(doc, "TLS.identifier"); err != nil {
		return nil, err
	}
	var n int64
	if n, err = num(doc, "TLS.sdkappid"); err != nil {
		return nil, err
	}
	s.SDKAppID = uint64(n)
	if s.Time, err = num(doc, "TLS.time"); err != nil {
		return nil, err
	}
	if s.Expire, err = num(doc, "TLS.expire"); err != nil {
		return nil, err
	}
	sig, err := str(doc, "TLS.sig")
	if err != nil {
		return nil, err
	}
	if s.sig, err = base64.StdEncoding.DecodeString(sig); err != nil {
		return nil, fmt.Errorf("%w: TLS.sig: %v", ErrMalformed, err)
	}
	if _, ok := doc["TLS.userbuf"]; ok {
		ub, err := str(doc, "TLS.userbuf")
		if err != nil {
			return nil, err
		}
		if s.UserBuf, err = base64.StdEncoding.DecodeString(ub); err != nil {
			return nil, fmt.Errorf("%w: TLS.userbuf: %v", ErrMalformed, err)
		}
		s.HasUserBuf = true
	}
	return s, nil
}

func str(doc map[string]json.RawMessage, k string) (string, error) {
	var s string
	if err := json.Unmarshal(doc[k], &s); err != nil {
		return "", fmt.Errorf("%w: %s is not a string", ErrMalformed, k)
	}
	return s, nil
}

// num accepts a JSON integer or a numeric string (harmless leniency, §2.5).
func num(doc map[string]json.RawMessage, k string) (int64, error) {
	raw, ok := doc[k]
	if !ok {
		return 0, fmt.Errorf("%w: %s missing", ErrMalformed, k)
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, fmt.Errorf("%w: %s is not a number", ErrMalformed, k)
		}
		n = json.Number(s)
	}
	v, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s is not an integer", ErrMalformed, k)
	}
	return v, nil
}

// Verify checks userSig for identifier and sdkappid with key at now, in the
// order of reference §2.5: decode, sdkappid, identifier, expiry, HMAC.
func Verify(userSig string, sdkappid uint64, key, identifier string, now time.Time) (*Sig, error) {
	s, err := Parse(userSig)
	if err != nil {
		return nil, err
	}
	if s.SDKAppID != sdkappid {
		return nil, ErrSDKAppID
	}
	if s.Identifier != identifier {
		return nil, ErrIdentifier
	}
	if now.Unix() > s.Time+s.Expire {
		return nil, ErrExpired
	}
	want := hmacBase64(key, s.Identifier, s.SDKAppID, s.Time, s.Expire, s.UserBuf, s.HasUserBuf)
	if !hmac.Equal(want, s.sig) {
		return nil, ErrSignature
	}
	return s, nil
}
