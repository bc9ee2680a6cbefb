package jsonenc

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestString(t *testing.T) {
	for _, s := range []string{"", "plain", `quo"te`, `back\slash`, "<tag>&amp;", "tab\tnew\nline", "ünï©ode", "\x00\x1f\x7f", "\xff\xfe", "\u2028\u2029", "emoji 😀"} {
		want, _ := json.Marshal(s)
		if got := String(nil, s, true); !bytes.Equal(got, want) {
			t.Errorf("String(%q, html) = %s, want %s", s, got, want)
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.Encode(s)
		if got := String([]byte("x"), s, false); string(got) != "x"+string(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))) {
			t.Errorf("String(%q) = %s, want %s", s, got, buf.Bytes())
		}
	}
}

func TestRaw(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"", "null"},
		{`[ {"a" : 1 , "b":"x y"} ]`, `[{"a":1,"b":"x y"}]`},
		{"\n{\"t\":\"<&>\"}\n", `{"t":"<&>"}`},
	} {
		got, err := Raw([]byte("x"), []byte(tc.raw))
		if err != nil || string(got) != "x"+tc.want {
			t.Errorf("Raw(%q) = %s, %v; want x%s", tc.raw, got, err, tc.want)
		}
	}
	if _, err := Raw(nil, []byte(`{"a":`)); err == nil {
		t.Error("Raw took a broken document")
	}
}
