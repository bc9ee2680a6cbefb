package main

import (
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
			args := append(append([]string{}, base...), tc.args...)
			cfg, fl, err := loadConfig("test", args)
			if err != nil {
				t.Fatal(err)
			}
			if err := fl.Parse(args); err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate()
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
