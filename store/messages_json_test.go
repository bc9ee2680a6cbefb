package store

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"unicode/utf8"
)

// fillRandom sets every field of the struct v points to (strings, integers,
// bools, raw JSON) to a random value, zero some of the time: a field added
// to the struct and forgotten by a hand-written encoder shows up here.
func fillRandom(r *rand.Rand, v any) {
	strs := []string{"", "alice", "7_123_1764230400", `{"k":"v"}`, "<b>&amp;</b>", "ünï\x01\"\\", "\xff"}
	raws := []string{"", `[]`, `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi <3 & bye"}}]`, " [ {\"a\" : 1} ]\n", `{"Tag_Profile_IM_Nick":"Al"}`}
	rv := reflect.ValueOf(v).Elem()
	for i := 0; i < rv.NumField(); i++ {
		f := rv.Field(i)
		zero := r.IntN(4) == 0
		switch {
		case f.Type() == reflect.TypeFor[json.RawMessage]():
			if raw := raws[r.IntN(len(raws))]; raw != "" && !zero {
				f.SetBytes([]byte(raw))
			}
		case zero:
		case f.Kind() == reflect.String:
			f.SetString(strs[r.IntN(len(strs))])
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		case f.CanInt():
			f.SetInt(r.Int64N(1<<31) - 1<<30)
		case f.CanUint():
			f.SetUint(r.Uint64N(1 << 32))
		default:
			panic("fillRandom: field " + rv.Type().Field(i).Name + " of an unhandled type")
		}
	}
}

// decodeAny is what a JSON reader sees.
func decodeAny(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	return v
}

// Message's hand-written encoding reads back as encoding/json's does.
func TestMessageJSON(t *testing.T) {
	type plain Message // the same fields and tags, without MarshalJSON
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 3000; i++ {
		var m Message
		fillRandom(r, &m)
		got, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(plain(m))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(decodeAny(t, got), decodeAny(t, want)) {
			t.Fatalf("hand-written:\n%s\nencoding/json:\n%s", got, want)
		}
	}
	if _, err := (&Message{MsgBody: json.RawMessage(`[{"broken":`)}).appendJSON(nil); err == nil {
		t.Fatal("a broken MsgBody was encoded")
	}
}

// Sent's hand-written encoding reads back as encoding/json's does.
func TestSentJSON(t *testing.T) {
	type plain Sent
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 3000; i++ {
		var v Sent
		fillRandom(r, &v)
		if r.IntN(2) == 0 {
			v.Body = r.Uint64() // past 2^53 too: a float64 reader would round it
		}
		got := v.appendJSON(nil)
		want, err := json.Marshal(plain(v))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(decodeAny(t, got), decodeAny(t, want)) {
			t.Fatalf("hand-written:\n%s\nencoding/json:\n%s", got, want)
		}
		var back Sent
		err = json.Unmarshal(got, &back)
		if !utf8.ValidString(v.MsgKey) {
			back.MsgKey = v.MsgKey // replaced by U+FFFD, as encoding/json does
		}
		if err != nil || back != v {
			t.Fatalf("%s reads back as %+v (%v), want %+v", got, back, err, v)
		}
	}
}
