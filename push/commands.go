package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/store"
)

// MaxTokenBytes bounds a device token. Real ones are far shorter (APNs 64
// hex digits, FCM about 160 characters, the Android vendors under 100).
const MaxTokenBytes = 512

// Register adds push/set_token and push/delete_token (PROTOCOL §3) to svc;
// the REST transport serves every registered command too. Bad input is
// 90001 (the openim parameter error), with an ErrorInfo naming the field.
func (p *Pusher) Register(svc *command.Service) {
	svc.RegisterHome("push/set_token", p.setToken, true, tokenHome)
	svc.RegisterHome("push/delete_token", p.deleteToken, true, tokenHome)
}

// tokenHome is the push commands' home: the user whose device it is, as
// parseTokenRequest decides (an admin names it in From_Account); the
// caller when the request is refused.
func tokenHome(c *command.Caller, body []byte) string {
	r, err := parseTokenRequest(c, body, false)
	if err != nil {
		return c.UserID
	}
	return r.user
}

type tokenRequest struct {
	user, device            string
	vendor, token, bundleID string
}

// parseTokenRequest reads the body and decides whose device it is: the
// caller's own over MQTT; over REST (no client id) an admin names the user
// in From_Account and the device in Device.
func parseTokenRequest(c *command.Caller, body []byte, needToken bool) (*tokenRequest, error) {
	body = bytes.TrimSpace(body)
	var f map[string]json.RawMessage
	if len(body) == 0 || body[0] != '{' || json.Unmarshal(body, &f) != nil {
		return nil, command.Errorf(command.CodeJSON, "request body must be a JSON object")
	}
	str := func(name string) (string, error) {
		v, ok := f[name]
		if !ok || bytes.Equal(v, []byte("null")) {
			return "", nil
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return "", command.Errorf(command.CodeJSON, "%s must be a String", name)
		}
		return s, nil
	}
	r := &tokenRequest{user: c.UserID, device: c.Device}
	from, err := str("From_Account")
	if err != nil {
		return nil, err
	}
	if from != "" && from != c.UserID {
		if !c.Admin {
			return nil, command.Errorf(command.CodeOpenIMNeedsAdmin, "only an App admin may register tokens for another user (From_Account %q)", from)
		}
		if !command.ValidUserID(from) {
			return nil, command.Errorf(command.CodeJSON, "From_Account %q is not a valid UserID", from)
		}
		r.user = from
	}
	if dev, err := str("Device"); err != nil {
		return nil, err
	} else if dev != "" {
		if c.Device != "" && dev != c.Device && !c.Admin {
			return nil, command.Errorf(command.CodeJSON, "Device may only name the device making the request")
		}
		r.device = dev
	}
	if r.device == "" {
		return nil, command.Errorf(command.CodeJSON, "Device (the client id) is required when the request does not come from a device")
	}
	if len(r.device) > 128 {
		return nil, command.Errorf(command.CodeJSON, "Device is longer than 128 bytes")
	}
	if !needToken {
		return r, nil
	}
	if r.vendor, err = str("Vendor"); err != nil {
		return nil, err
	}
	if !knownVendor(r.vendor) {
		return nil, command.Errorf(command.CodeJSON, "Vendor %q is not one of %s", r.vendor, strings.Join(Vendors, ", "))
	}
	if r.token, err = str("Token"); err != nil {
		return nil, err
	}
	switch {
	case r.token == "":
		return nil, command.Errorf(command.CodeJSON, "Token is missing or empty")
	case len(r.token) > MaxTokenBytes:
		return nil, command.Errorf(command.CodeJSON, "Token is %d bytes; the limit is %d", len(r.token), MaxTokenBytes)
	}
	for i := 0; i < len(r.token); i++ {
		if c := r.token[i]; c <= ' ' || c > '~' {
			return nil, command.Errorf(command.CodeJSON, "Token has a character (byte %d) that no push service uses", i)
		}
	}
	if r.vendor == "apns" && !isHex(r.token) {
		// It becomes part of the APNs request path.
		return nil, command.Errorf(command.CodeJSON, "an APNs Token is the device token in hexadecimal")
	}
	if r.bundleID, err = str("BundleID"); err != nil {
		return nil, err
	}
	if len(r.bundleID) > 255 {
		return nil, command.Errorf(command.CodeJSON, "BundleID is longer than 255 bytes")
	}
	return r, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func (p *Pusher) setToken(ctx context.Context, c *command.Caller, body []byte) (any, error) {
	r, err := parseTokenRequest(c, body, true)
	if err != nil {
		return nil, err
	}
	err = p.st.SetPushToken(store.PushToken{User: r.user, Device: r.device, Vendor: r.vendor, Token: r.token, BundleID: r.bundleID})
	if errors.Is(err, store.ErrClosed) {
		return nil, command.Errorf(command.CodeRetry, "server is shutting down, retry")
	}
	return nil, err
}

func (p *Pusher) deleteToken(ctx context.Context, c *command.Caller, body []byte) (any, error) {
	r, err := parseTokenRequest(c, body, false)
	if err != nil {
		return nil, err
	}
	_, err = p.st.DeletePushToken(r.user, r.device)
	if errors.Is(err, store.ErrClosed) {
		return nil, command.Errorf(command.CodeRetry, "server is shutting down, retry")
	}
	return nil, err
}
