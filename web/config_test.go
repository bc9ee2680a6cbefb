package web

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

// TestConfigMQTTURLs: /web/config.json hands the page --web-mqtt-urls, and
// leaves it out when unset so the page connects to its own host (docs/web.md).
func TestConfigMQTTURLs(t *testing.T) {
	for _, tc := range []struct {
		name string
		urls []string
	}{
		{"unset", nil},
		{"cluster", []string{"ws://n1:8083/mqtt", "wss://n2/mqtt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(Handler(Options{WSAddr: "127.0.0.1:8083", MQTTURLs: tc.urls}))
			defer srv.Close()
			r, err := http.Get(srv.URL + "/web/config.json")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Body.Close()
			var raw map[string]json.RawMessage
			if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
				t.Fatal(err)
			}
			var got []string
			if v, ok := raw["MQTTURLs"]; ok {
				if tc.urls == nil {
					t.Fatalf("MQTTURLs present when unset: %s", v)
				}
				json.Unmarshal(v, &got)
			}
			if !slices.Equal(got, tc.urls) {
				t.Fatalf("MQTTURLs = %v, want %v", got, tc.urls)
			}
			if string(raw["WSPort"]) != `"8083"` {
				t.Fatalf("WSPort = %s", raw["WSPort"])
			}
		})
	}
}
