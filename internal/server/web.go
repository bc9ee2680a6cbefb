package server

import (
	"errors"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/usersig"
	"github.com/duet-im/duet/web"
)

// webHandler is the web chat at / (package web), or nil with --web=false.
func webHandler(cfg Config, key, wsAddr string) http.Handler {
	if !cfg.Web {
		return nil
	}
	o := web.Options{WSAddr: wsAddr, MQTTURLs: cfg.WebMQTTURLs}
	if cfg.AutoAccounts && loopbackAddr(cfg.HTTP) {
		// A development server: anyone who can reach it may be anyone
		// (--auto-accounts), so a name-only sign-in gives nothing away.
		o.DevLogin = func(user string) (string, error) {
			if !command.ValidUserID(user) {
				return "", errors.New("UserID: up to 32 of A-Z a-z 0-9 _ - @ .")
			}
			if slices.Contains(cfg.Admins, user) {
				return "", errors.New("admin accounts need a real UserSig (duet usersig)")
			}
			return usersig.Gen(cfg.SDKAppID, key, user, 86400, time.Now())
		}
	}
	return loopbackOnlyPath("/web/dev-login", web.Handler(o))
}

// loopbackAddr reports whether a listener address binds loopback only
// (":8080" and "0.0.0.0:8080" bind every interface).
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackOnlyPath sends path through loopbackOnly (a reverse proxy on the
// same host could otherwise expose the development sign-in).
func loopbackOnlyPath(path string, h http.Handler) http.Handler {
	guarded := loopbackOnly(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path {
			guarded.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}
