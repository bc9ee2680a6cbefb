package pushinfo

import (
	"strings"
	"testing"
)

// The class fields Duet adds to AndroidInfo are typed and range-checked
// like Tencent's own (a bad one is 90043 naming the field at sendmsg).
func TestClassFields(t *testing.T) {
	for _, c := range []struct{ raw, bad string }{
		{`{"AndroidInfo":{"OPPOCategory":"IM","OPPONotifyLevel":16,"MeizuNoticeMsgType":0}}`, ""},
		{`{"AndroidInfo":{"OPPOCategory":1}}`, "OPPOCategory"},
		{`{"AndroidInfo":{"OPPONotifyLevel":"2"}}`, "OPPONotifyLevel"},
		{`{"AndroidInfo":{"OPPONotifyLevel":3}}`, "OPPONotifyLevel"},
		{`{"AndroidInfo":{"MeizuNoticeMsgType":2}}`, "MeizuNoticeMsgType"},
		{`{"AndroidInfo":{"MeizuNoticeMsgType":"1"}}`, "MeizuNoticeMsgType"},
	} {
		o, err := Parse([]byte(c.raw))
		switch {
		case c.bad == "" && err != nil:
			t.Errorf("%s: %v", c.raw, err)
		case c.bad != "" && (err == nil || !strings.Contains(err.Error(), c.bad)):
			t.Errorf("%s: %v, want an error naming %s", c.raw, err, c.bad)
		case c.bad == "" && (o.AndroidInfo.OPPONotifyLevel != 16 || *o.AndroidInfo.MeizuNoticeMsgType != 0):
			t.Errorf("%s: %+v", c.raw, o.AndroidInfo)
		}
	}
}
