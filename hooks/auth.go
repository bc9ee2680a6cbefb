// Package hooks holds Duet's mochi-mqtt hooks: Auth (login and topic ACLs,
// PROTOCOL §1–2) and Requests (the command path, PROTOCOL §3).
package hooks

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/xid"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/store"
	"github.com/duet-im/duet/usersig"
)

// Accounts is what login needs to know about users.
type Accounts interface {
	AccountExists(user string) (bool, error)
	ImportAccount(a store.Account) (bool, error)
}

// AuthConfig configures the Auth hook.
type AuthConfig struct {
	SDKAppID     uint64
	Key          string
	Accounts     Accounts
	AutoAccounts bool
	Clock        func() time.Time
	// KickedAt returns when user was last kicked: sigs issued before it are
	// refused. Nil means nobody was.
	KickedAt func(user string) time.Time
	Log      *slog.Logger
}

// Auth verifies logins (username = UserID, password = UserSig, client id =
// `{UserID}:{DeviceID}`) and confines each user to im/{user}/….
type Auth struct {
	mqtt.HookBase
	cfg    AuthConfig
	server *mqtt.Server
}

// NewAuth makes the hook; server is needed to answer refused CONNECTs with
// a reason.
func NewAuth(server *mqtt.Server, cfg AuthConfig) *Auth {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Auth{cfg: cfg, server: server}
}

func (h *Auth) ID() string { return "duet-auth" }

func (h *Auth) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

// refusal is a login refused, with what each protocol version is told.
type refusal struct {
	v5     packets.Code // 0x85 bad client id, 0x86 bad credentials, 0x87 not authorized
	reason string
}

func (r *refusal) Error() string { return r.reason }

func badCredentials(format string, args ...any) *refusal {
	return &refusal{packets.ErrBadUsernameOrPassword, fmt.Sprintf(format, args...)}
}

func notAuthorized(format string, args ...any) *refusal {
	return &refusal{packets.ErrNotAuthorized, fmt.Sprintf(format, args...)}
}

func badClientID(format string, args ...any) *refusal {
	return &refusal{packets.ErrClientIdentifierNotValid, fmt.Sprintf(format, args...)}
}

// Unavailable is an error Accounts may return to refuse a login with
// "server unavailable" (MQTT 5 0x88, 3.1.1 return code 3) and reason: a
// node that sends its devices to other nodes (a draining cluster node).
func Unavailable(reason string) error { return &refusal{packets.ErrServerUnavailable, reason} }

// WillRefused is the reason string of a CONNECT refused for its Will.
const WillRefused = "Will messages are not accepted"

// MaxDeviceID bounds the DeviceID part of a client id. The client id is
// part of the device's cursor key and of every log line about it.
const MaxDeviceID = 128

// OnConnect checks the login before mochi registers the client. A refused
// client gets a CONNACK naming the cause (v5 reason string) and is closed.
func (h *Auth) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	err := h.login(cl, pk)
	if err == nil {
		// mochi's user name and client id point into the CONNECT's bytes,
		// UserSig and all: copies let those go for the life of the
		// connection (issue 11 §4).
		cl.Properties.Username = bytes.Clone(cl.Properties.Username)
		cl.ID = strings.Clone(cl.ID)
		return nil
	}
	var r *refusal
	if !errors.As(err, &r) {
		r = &refusal{packets.ErrServerUnavailable, "server error"}
		h.cfg.Log.Error("login failed", "error", err)
	}
	code := r.v5
	code.Reason = r.reason
	if cl.Properties.ProtocolVersion < 5 {
		// MQTT 3.1.1 has return codes only: 0x02 identifier rejected, 0x03
		// server unavailable, 0x04 bad user name or password, 0x05 not
		// authorized [MQTT-3.2.2-5]. The server's own failure must not read
		// as bad credentials: clients give up on those.
		switch r.v5 {
		case packets.ErrNotAuthorized:
			code = packets.Err3NotAuthorized
		case packets.ErrClientIdentifierNotValid:
			code = packets.Err3ClientIdentifierNotValid
		case packets.ErrServerUnavailable:
			code = packets.Err3ServerUnavailable
		default:
			code = packets.ErrMalformedUsernameOrPassword
		}
	}
	h.cfg.Log.Info("login refused", "user", short(string(pk.Connect.Username)), "client", short(cl.ID), "reason", r.reason)
	_ = h.server.SendConnack(cl, code, false, nil)
	return r
}

// short cuts a refused user name or client id (up to 64 KiB each) for
// the log.
func short(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

func (h *Auth) login(cl *mqtt.Client, pk packets.Packet) error {
	// mochi publishes a Will (at once, or after its Will Delay Interval)
	// without the publish ACL, to any topic the CONNECT names: a logged-in
	// user could put forged events on another user's topics. Nothing reaches
	// a user's topics except through Duet's commands (PROTOCOL §3).
	if pk.Connect.WillFlag {
		return notAuthorized(WillRefused)
	}
	user := string(pk.Connect.Username)
	if !command.ValidUserID(user) {
		return badCredentials("invalid user id")
	}
	sig, err := usersig.Verify(string(pk.Connect.Password), h.cfg.SDKAppID, h.cfg.Key, user, h.cfg.Clock())
	switch {
	case errors.Is(err, usersig.ErrExpired):
		return badCredentials("usersig expired")
	case errors.Is(err, usersig.ErrIdentifier):
		return badCredentials("usersig belongs to another user")
	case errors.Is(err, usersig.ErrSDKAppID):
		return badCredentials("usersig is for another sdkappid")
	case err != nil:
		return badCredentials("bad signature")
	}
	if h.cfg.KickedAt != nil && sig.IssuedAt().Before(h.cfg.KickedAt(user)) {
		return notAuthorized("kicked: usersig issued before the last kick")
	}
	// Client id: {UserID}:{DeviceID}, or empty for a server-assigned one.
	if pk.Connect.ClientIdentifier == "" {
		cl.ID = user + ":~" + xid.New().String()
		cl.Properties.Props.AssignedClientID = cl.ID // [MQTT-3.2.2-16]
	} else if !strings.HasPrefix(cl.ID, user+":") || len(cl.ID) == len(user)+1 {
		return notAuthorized("client id must be %s:{DeviceID}", user)
	} else if dev := cl.ID[len(user)+1:]; !ValidDeviceID(dev) {
		return badClientID("DeviceID must be 1-%d bytes of A-Z a-z 0-9 _ - @ .", MaxDeviceID)
	}
	exists, err := h.cfg.Accounts.AccountExists(user)
	if err != nil {
		return err
	}
	if !exists {
		if !h.cfg.AutoAccounts {
			return notAuthorized("unknown user")
		}
		if _, err := h.cfg.Accounts.ImportAccount(store.Account{UserID: user}); err != nil {
			return err
		}
	}
	return nil
}

// OnConnectAuthenticate passes: OnConnect already refused what must be.
func (h *Auth) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool { return true }

// OnACLCheck confines a user to its own topics (PROTOCOL §2): it may publish
// only to im/{me}/req/…, without wildcards, and subscribe only to filters
// below im/{me}/ (wildcards only after that prefix).
func (h *Auth) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	user := cl.Properties.Username
	if write {
		prefix := "im/" + string(user) + "/req/"
		return strings.HasPrefix(topic, prefix) && len(topic) > len(prefix) && !strings.ContainsAny(topic, "+#")
	}
	prefix := "im/" + string(user) + "/"
	return strings.HasPrefix(topic, prefix) && len(topic) > len(prefix)
}

// ValidDeviceID reports whether d may be the DeviceID of a client id: at
// most MaxDeviceID bytes of [A-Za-z0-9_\-@.]. It leaves out '~', which
// marks the ids the server assigns, and ':', the separator.
func ValidDeviceID(d string) bool {
	if len(d) == 0 || len(d) > MaxDeviceID {
		return false
	}
	// The alphabet of a UserID: command.ValidUserID checks it on up to 32
	// bytes at a time.
	for len(d) > 0 {
		n := min(len(d), 32)
		if !command.ValidUserID(d[:n]) {
			return false
		}
		d = d[n:]
	}
	return true
}

// Device returns the user and whether the client id was assigned by the
// server (an ephemeral device, new at every connect).
func Device(cl *mqtt.Client) (user string, ephemeral bool) {
	return string(cl.Properties.Username), cl.Properties.Props.AssignedClientID != ""
}
