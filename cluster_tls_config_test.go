package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The route TLS settings come as flags, DUET_ env and YAML like every other
// and reach the server's cluster config; a partial set is refused by
// Validate, naming the missing setting.
func TestClusterTLSSettings(t *testing.T) {
	base := []string{"--cluster-name", "c", "--node", "n1", "--cluster-routes", "nats://127.0.0.1:6222", "--cluster-secret", "s"}
	t.Setenv("DUET_CLUSTER_TLS_CA", "/ca.pem")
	for _, tc := range []struct {
		name string
		args []string
		want string // "" = valid
	}{
		{"all three", []string{"--cluster-tls-cert", "/n1.pem", "--cluster-tls-key", "/n1-key.pem"}, ""},
		{"no key", []string{"--cluster-tls-cert", "/n1.pem"}, "cluster-tls-key is missing"},
		{"no cert", []string{"--cluster-tls-key", "/n1-key.pem"}, "cluster-tls-cert is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parseConfig(t, append(append([]string{}, base...), tc.args...)...)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				got := cfg.clusterConfig().TLS
				if got.Cert != "/n1.pem" || got.Key != "/n1-key.pem" || got.CA != "/ca.pem" {
					t.Fatalf("cluster TLS %+v", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want it to say %q", err, tc.want)
			}
		})
	}
}

// --cluster-advertise (flag, DUET_ env or YAML) is the route address the
// embedded server gossips; it must be host:port, and has no meaning with
// an external NATS cluster.
func TestClusterAdvertiseSetting(t *testing.T) {
	base := []string{"--cluster-name", "c", "--node", "n1", "--cluster-routes", "nats://10.0.0.1:6222", "--cluster-secret", "s"}
	yaml := filepath.Join(t.TempDir(), "duet.yaml")
	if err := os.WriteFile(yaml, []byte("cluster-advertise: 203.0.113.9:16222\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  string
		want string // the advertised address, or an error's text
		bad  bool
	}{
		{name: "flag", args: []string{"--cluster-advertise", "203.0.113.7:16222"}, want: "203.0.113.7:16222"},
		{name: "env", env: "203.0.113.8:16222", want: "203.0.113.8:16222"},
		{name: "yaml", args: []string{"--config", yaml}, want: "203.0.113.9:16222"},
		{name: "none", want: ""},
		{name: "not host:port", args: []string{"--cluster-advertise", "203.0.113.7"}, want: "cluster-advertise \"203.0.113.7\": want host:port", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("DUET_CLUSTER_ADVERTISE", tc.env) // restored after the test
			if tc.env == "" {
				os.Unsetenv("DUET_CLUSTER_ADVERTISE")
			}
			cfg := parseConfig(t, append(append([]string{}, base...), tc.args...)...)
			err := cfg.Validate()
			if tc.bad {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Validate: %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.clusterConfig().Advertise; got != tc.want {
				t.Fatalf("advertised %q, want %q", got, tc.want)
			}
		})
	}
	cfg := parseConfig(t, "--nats", "nats://10.0.0.1:4222", "--cluster-advertise", "203.0.113.7:16222")
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "excludes cluster-advertise") {
		t.Fatalf("Validate with nats: %v", err)
	}
}
