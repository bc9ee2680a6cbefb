package store

import (
	"encoding/json"
	"fmt"
)

// Profile is a user's profile (reference §6.2): tag → JSON value (a string
// or an unsigned integer). V grows with every change, so a cache can tell
// a newer profile from an older one.
type Profile struct {
	V    uint64                     `json:"V"`
	Tags map[string]json.RawMessage `json:"Tags"`
}

// Mute is a user's global mute (reference §6.4): until when, in Unix
// seconds, sends are refused; 0 means not muted, MuteForever for ever.
type Mute struct {
	C2CUntil   int64 `json:"C2CUntil,omitempty"`
	GroupUntil int64 `json:"GroupUntil,omitempty"`
}

// MuteForever marks a mute without end (4294967295 seconds on the wire).
const MuteForever = int64(1) << 62

func profileKey(user string) []byte { return key([]byte("pf/"), []byte(user)) }
func muteKey(user string) []byte    { return key([]byte("nm/"), []byte(user)) }

func decodeProfile(v []byte, err error) (*Profile, error) {
	if err != nil || v == nil {
		return nil, err
	}
	var p Profile
	if err := json.Unmarshal(v, &p); err != nil {
		return nil, fmt.Errorf("store: profile: %w", err)
	}
	return &p, nil
}

// GetProfile returns user's stored profile, or nil when none was set.
func (s *Store) GetProfile(user string) (*Profile, error) {
	if o := s.part(user); o != s {
		return o.GetProfile(user)
	}
	return decodeProfile(get(s.db, profileKey(user)))
}

// GetProfile returns user's profile as of this transaction, or nil.
func (tx *Tx) GetProfile(user string) (*Profile, error) {
	return decodeProfile(tx.Get(profileKey(user)))
}

// PutProfile writes user's profile.
func (tx *Tx) PutProfile(user string, p *Profile) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	tx.Put(profileKey(user), b)
	return nil
}

func decodeMute(v []byte, err error) (Mute, error) {
	var m Mute
	if err != nil || v == nil {
		return m, err
	}
	if err := json.Unmarshal(v, &m); err != nil {
		return m, fmt.Errorf("store: mute: %w", err)
	}
	return m, nil
}

// GetMute returns user's mute record (zero when never muted).
func (s *Store) GetMute(user string) (Mute, error) {
	if o := s.part(user); o != s {
		return o.GetMute(user)
	}
	return decodeMute(get(s.db, muteKey(user)))
}

// GetMute returns user's mute record as of this transaction.
func (tx *Tx) GetMute(user string) (Mute, error) { return decodeMute(tx.Get(muteKey(user))) }

// PutMute writes user's mute record; a zero record is deleted.
func (tx *Tx) PutMute(user string, m Mute) error {
	if m == (Mute{}) {
		tx.Delete(muteKey(user))
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tx.Put(muteKey(user), b)
	return nil
}
