package command

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
)

// The msg event's hand-written encoding reads back as the command layer's
// marshal (encoding/json without HTML escaping) does; every field of the
// struct takes part.
func TestMsgEventJSON(t *testing.T) {
	type plain msgEvent // the same fields and tags, without MarshalJSON
	strs := []string{"", "msg", "alice", "7_123_1764230400", `{"k":"v"}`, "<b>&amp;</b>", "ünï\x01\"\\", "\xff"}
	raws := []string{"", `[]`, `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi <3 & bye"}}]`, " [ {\"a\" : 1} ]\n", `{"Tag_Profile_IM_Nick":"Al"}`}
	decode := func(b []byte) any {
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%v in %s", err, b)
		}
		return v
	}
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 3000; i++ {
		var ev msgEvent
		rv := reflect.ValueOf(&ev).Elem()
		for j := 0; j < rv.NumField(); j++ {
			f := rv.Field(j)
			if r.IntN(4) == 0 {
				continue // zero
			}
			switch {
			case f.Type() == reflect.TypeFor[json.RawMessage]():
				if raw := raws[r.IntN(len(raws))]; raw != "" {
					f.SetBytes([]byte(raw))
				}
			case f.Kind() == reflect.String:
				f.SetString(strs[r.IntN(len(strs))])
			case f.CanInt():
				f.SetInt(r.Int64N(1<<31) - 1<<30)
			case f.CanUint():
				f.SetUint(r.Uint64N(1 << 32))
			default:
				t.Fatalf("field %s of an unhandled type", rv.Type().Field(j).Name)
			}
		}
		got, err := marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		want, err := marshal(plain(ev))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(decode(got), decode(want)) {
			t.Fatalf("hand-written:\n%s\nencoding/json:\n%s", got, want)
		}
	}
}
