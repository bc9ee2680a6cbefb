package push

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// APNs over HTTP/2 with token-based authentication (Apple, "Sending
// notification requests to APNs", "Establishing a token-based connection"):
// POST {base}/3/device/{token}, `authorization: bearer <ES256 JWT>` whose
// header names the key (kid) and whose claims name the team (iss) and the
// issue time (iat); `apns-topic` is the app's bundle ID.

const (
	apnsProduction = "https://api.push.apple.com"
	apnsSandbox    = "https://api.sandbox.push.apple.com"
	// Apple ("Establishing a token-based connection"): refresh the provider
	// token no less than once an hour and no more often than every 20
	// minutes, else 429 TooManyProviderTokenUpdates.
	apnsTokenLife = 50 * time.Minute
	apnsMinResign = 20 * time.Minute
	apnsMaxBytes  = 4096
)

type apns struct {
	cfg    APNsConfig
	base   string
	key    *ecdsa.PrivateKey
	client *http.Client
	now    func() time.Time

	jwtMu   sync.Mutex
	jwt     string
	jwtAt   time.Time // when jwt was signed
	expired bool      // APNs called jwt expired: re-sign once allowed
}

func newAPNs(cfg APNsConfig, client *http.Client, now func() time.Time) (*apns, error) {
	if cfg.KeyID == "" || cfg.TeamID == "" {
		return nil, errors.New("apns: key_id and team_id are required")
	}
	pemText, err := readKey(cfg.KeyFile, cfg.Key, "apns")
	if err != nil {
		return nil, err
	}
	k, err := parsePrivateKey(pemText)
	if err != nil {
		return nil, fmt.Errorf("apns: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("apns: the .p8 key must be an EC P-256 key, not %T", k)
	}
	def := apnsSandbox
	if cfg.Production {
		def = apnsProduction
	}
	if client == nil {
		// HTTP/2 is required by APNs; a Transport with its own TLS settings
		// must ask for it explicitly.
		client = defaultClient()
	}
	return &apns{cfg: cfg, base: base(cfg.Endpoint, def), key: ek, client: client, now: now}, nil
}

func (a *apns) name() string { return "apns" }

func (a *apns) env() string {
	if a.cfg.Production {
		return "production"
	}
	return "sandbox"
}

// providerToken returns the current provider token, signing a new one when
// it is 50 minutes old, or when APNs called it expired and it is at least
// 20 minutes old: re-signing sooner is refused, so an early
// ExpiredProviderToken (a skewed clock) is retried with the same token.
func (a *apns) providerToken() (string, error) {
	a.jwtMu.Lock()
	defer a.jwtMu.Unlock()
	now := a.now()
	age := now.Sub(a.jwtAt)
	if a.jwt != "" && age < apnsTokenLife && !(a.expired && age >= apnsMinResign) {
		return a.jwt, nil
	}
	t, err := signES256(a.key,
		map[string]string{"alg": "ES256", "kid": a.cfg.KeyID},
		map[string]any{"iss": a.cfg.TeamID, "iat": now.Unix()})
	if err != nil {
		return "", err
	}
	a.jwt, a.jwtAt, a.expired = t, now, false
	return t, nil
}

// tokenExpired records APNs' ExpiredProviderToken for the token jwt.
func (a *apns) tokenExpired(jwt string) {
	a.jwtMu.Lock()
	if a.jwt == jwt {
		a.expired = true
	}
	a.jwtMu.Unlock()
}

// apnsPayload builds the JSON payload: the aps dictionary plus Tencent's
// `ext` key (reference §3.2, TIMCustomElem.Ext "sent as ext in APNs payload").
func apnsPayload(n *Notification) ([]byte, error) {
	if n.Silent {
		// A recall: a background update the app uses to remove what it showed.
		return json.Marshal(map[string]any{"aps": map[string]any{"content-available": 1}, "withdraw": n.MsgKey})
	}
	return fitBytes("apns", n.Body, apnsMaxBytes, func(body string) ([]byte, error) {
		alert := map[string]string{"body": body}
		title := n.Title
		if n.APNs.Title != "" {
			title = n.APNs.Title
		}
		if title != "" {
			alert["title"] = title
		}
		if n.APNs.SubTitle != "" {
			alert["subtitle"] = n.APNs.SubTitle
		}
		aps := map[string]any{"alert": alert}
		if n.APNs.BadgeMode != 1 { // 1: leave the badge alone (§4)
			aps["badge"] = n.Badge
		}
		sound := n.APNs.Sound
		if sound == "" {
			sound = "default"
		}
		aps["sound"] = sound
		if n.APNs.MutableContent == 1 || n.APNs.Image != "" {
			aps["mutable-content"] = 1
		}
		p := map[string]any{"aps": aps}
		if n.Ext != "" {
			p["ext"] = n.Ext
		}
		if n.APNs.Image != "" {
			p["image"] = n.APNs.Image
		}
		return json.Marshal(p)
	})
}

func (a *apns) send(ctx context.Context, n *Notification) error {
	payload, err := apnsPayload(n)
	if err != nil {
		return err
	}
	topic := n.BundleID
	if topic == "" {
		topic = a.cfg.BundleID
	}
	if topic == "" {
		return failf(permanent, "apns: no bundle ID (set push.apns.bundle_id or the token's BundleID)")
	}
	jwt, err := a.providerToken()
	if err != nil {
		return failf(permanent, "apns: signing provider token: %v", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/3/device/"+n.Token, bytes.NewReader(payload))
	if err != nil {
		return failf(permanent, "apns: %v", err)
	}
	req.Header.Set("authorization", "bearer "+jwt)
	req.Header.Set("apns-topic", topic)
	req.Header.Set("content-type", "application/json")
	if n.Silent {
		// Background pushes must be priority 5 (Apple, "Pushing background updates").
		req.Header.Set("apns-push-type", "background")
		req.Header.Set("apns-priority", "5")
	} else {
		req.Header.Set("apns-push-type", "alert")
		req.Header.Set("apns-priority", "10")
		if len(n.MsgKey) <= 64 {
			req.Header.Set("apns-collapse-id", n.MsgKey)
		}
	}
	req.Header.Set("apns-expiration", strconv.FormatInt(a.now().Add(24*time.Hour).Unix(), 10))
	ans, err := do(a.client, req)
	if err != nil {
		return classify(err)
	}
	if ans.status == http.StatusOK {
		return nil
	}
	var reply struct {
		Reason string `json:"reason"`
	}
	if e := ans.transient("apns"); e != nil {
		return e
	}
	if e := ans.decode("apns", &reply); e != nil {
		return e
	}
	// Apple, "Handling notification responses from APNs": only 410
	// Unregistered says the token is dead. BadDeviceToken also means a token
	// of the other environment (sandbox vs production), and
	// DeviceTokenNotForTopic a bundle id that is not the token's app: with a
	// wrong `production` or `bundle_id` every token would answer so, and
	// deleting them would lose every iOS device.
	switch {
	case ans.status == http.StatusGone || reply.Reason == "Unregistered":
		return failf(invalidToken, "apns: HTTP %d %s", ans.status, reply.Reason)
	case reply.Reason == "BadDeviceToken":
		return failf(misconfigured, "apns: HTTP %d BadDeviceToken: the token is not one of the %s environment (check push.apns.production) or is malformed", ans.status, a.env())
	case reply.Reason == "DeviceTokenNotForTopic":
		return failf(misconfigured, "apns: HTTP %d DeviceTokenNotForTopic: the token is not for bundle id %q (check push.apns.bundle_id or the device's BundleID)", ans.status, topic)
	case reply.Reason == "ExpiredProviderToken":
		a.tokenExpired(jwt)
		return failf(retry, "apns: HTTP %d %s", ans.status, reply.Reason)
	}
	return failf(permanent, "apns: HTTP %d %s", ans.status, reply.Reason)
}
