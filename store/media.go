package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble"
)

// Media records (package media): upload records, who may download an
// upload, and which hours of history were archived. The objects themselves
// live in S3; these keys say which objects exist and whose they are.

// Upload is the record of one media upload.
type Upload struct {
	UUID  string `json:"UUID"`
	Owner string `json:"Owner"`
	// Admin: uploaded by an App admin (REST), whose messages may name any
	// sender and recipient.
	Admin       bool   `json:"Admin,omitempty"`
	Type        string `json:"Type"` // image, sound, file, video, video_thumb
	Size        int64  `json:"Size"` // declared, then the real size once committed
	ContentType string `json:"ContentType"`
	FileName    string `json:"FileName,omitempty"`
	Created     int64  `json:"Created"`
	// Deadline is when a never-committed upload's object is removed.
	Deadline  int64 `json:"Deadline"`
	Committed bool  `json:"Committed,omitempty"`
	// Element is the MsgContent fields the commit answered (JSON object).
	Element json.RawMessage `json:"Element,omitempty"`
	// Objects are the object names stored for the upload (original first).
	Objects []string `json:"Objects,omitempty"`
}

func uploadKey(uuid string) []byte { return key([]byte("mu/"), []byte(uuid)) }

func pendingKey(deadline int64, uuid string) []byte {
	return key([]byte("mp/"), u64(uint64(deadline)), []byte(uuid))
}

func grantKey(uuid, user string) []byte {
	return key([]byte("mg/"), []byte(uuid), []byte{sep}, []byte(user))
}

func archiveKey(hour int64) []byte { return key([]byte("ma/"), u64(uint64(hour))) }

// uploadGrace is how long after its deadline a pending upload's records stay
// in the store if the cleaner never ran (S3 down): long enough for a later
// cleaner run to still find and remove the object.
const uploadGrace = 7 * 24 * time.Hour

// PutUpload stores a new, uncommitted upload. Its records expire on their own
// uploadGrace after the deadline; the cleaner removes them (and the object)
// sooner.
func (tx *Tx) PutUpload(u *Upload) error {
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	k, p := uploadKey(u.UUID), pendingKey(u.Deadline, u.UUID)
	tx.Put(k, b)
	tx.Put(p, nil)
	tx.ExpireAt(time.Unix(u.Deadline, 0).Add(uploadGrace), k, p)
	return nil
}

// Upload reads an upload record inside a transaction (nil when absent).
func (tx *Tx) Upload(uuid string) (*Upload, error) {
	v, err := tx.Get(uploadKey(uuid))
	if err != nil || v == nil {
		return nil, err
	}
	var u Upload
	if err := json.Unmarshal(v, &u); err != nil {
		return nil, fmt.Errorf("store: upload %s: %w", uuid, err)
	}
	return &u, nil
}

// CommitUpload marks u committed: it leaves the pending index and its
// records no longer expire.
func (tx *Tx) CommitUpload(u *Upload) error {
	u.Committed = true
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	k, p := uploadKey(u.UUID), pendingKey(u.Deadline, u.UUID)
	expire := time.Unix(u.Deadline, 0).Add(uploadGrace)
	tx.Put(k, b)
	tx.Delete(p)
	tx.Delete(expiryKey(expire, k))
	tx.Delete(expiryKey(expire, p))
	return nil
}

// DeleteUpload removes an upload's records (refused or cleaned up).
func (tx *Tx) DeleteUpload(u *Upload) {
	k, p := uploadKey(u.UUID), pendingKey(u.Deadline, u.UUID)
	expire := time.Unix(u.Deadline, 0).Add(uploadGrace)
	tx.Delete(k)
	tx.Delete(p)
	tx.Delete(expiryKey(expire, k))
	tx.Delete(expiryKey(expire, p))
}

// GetUpload reads an upload record; ErrNotFound when absent.
func (s *Store) GetUpload(uuid string) (*Upload, error) {
	v, err := get(s.db, uploadKey(uuid))
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, ErrNotFound
	}
	var u Upload
	if err := json.Unmarshal(v, &u); err != nil {
		return nil, fmt.Errorf("store: upload %s: %w", uuid, err)
	}
	return &u, nil
}

// Pending is an uncommitted upload waiting for its deadline.
type Pending struct {
	UUID     string
	Deadline int64
}

// PendingUploads returns the uncommitted uploads whose deadline is at or
// before now, at most max.
func (s *Store) PendingUploads(now time.Time, max int) ([]Pending, error) {
	lower := []byte("mp/")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: pendingKey(now.Unix()+1, "")})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Pending
	for ok := it.First(); ok && len(out) < max; ok = it.Next() {
		k := it.Key()[len(lower):]
		out = append(out, Pending{UUID: string(k[8:]), Deadline: int64(binary.BigEndian.Uint64(k))})
	}
	return out, it.Error()
}

// DeletePending drops a pending entry whose upload record is already gone.
func (tx *Tx) DeletePending(p Pending) {
	k := pendingKey(p.Deadline, p.UUID)
	tx.Delete(k)
	tx.Delete(expiryKey(time.Unix(p.Deadline, 0).Add(uploadGrace), k))
}

// Grant records that user may download upload uuid (found in a message to
// them), so the next download needs no history scan.
func (tx *Tx) Grant(uuid, user string) { tx.Put(grantKey(uuid, user), []byte{1}) }

// Granted reports whether user was granted upload uuid.
func (s *Store) Granted(uuid, user string) (bool, error) {
	v, err := get(s.db, grantKey(uuid, user))
	return v != nil, err
}

// ArchivedHour returns the record of an archived hour (the Unix time of its
// start), or nil when the hour was not archived yet.
func (s *Store) ArchivedHour(hour int64) ([]byte, error) {
	return get(s.db, archiveKey(hour))
}

// LastArchivedHour is the start of the latest archived hour, or 0.
func (s *Store) LastArchivedHour() (int64, error) {
	lower := []byte("ma/")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	if it.Last() {
		return int64(binary.BigEndian.Uint64(it.Key()[len(lower):])), nil
	}
	return 0, it.Error()
}

// MarkArchived records that hour was archived, with rec (JSON) describing
// the archive object.
func (s *Store) MarkArchived(hour int64, rec []byte) error {
	return s.Update(func(tx *Tx) error {
		tx.Put(archiveKey(hour), rec)
		return nil
	})
}

// FirstMessageTime is the time of the oldest message in the time index
// (ok false when there is none).
func (s *Store) FirstMessageTime() (t time.Time, ok bool, err error) {
	lower := []byte("m/")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return time.Time{}, false, err
	}
	defer it.Close()
	if it.First() {
		return time.Unix(int64(binary.BigEndian.Uint64(it.Key()[len(lower):])), 0), true, nil
	}
	return time.Time{}, false, it.Error()
}

// ScanMessages calls fn for each C2C message whose MsgTime is in [from, to),
// in time order, through the time index m/. Index entries whose history
// record has gone (expired between the two reads) are skipped.
func (s *Store) ScanMessages(from, to time.Time, fn func(*Message) error) error {
	lo, hi := from.Unix(), to.Unix()
	if lo < 0 {
		lo = 0
	}
	if hi <= lo {
		return nil
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(&pebble.IterOptions{
		LowerBound: key([]byte("m/"), u64(uint64(lo))),
		UpperBound: key([]byte("m/"), u64(uint64(hi))),
	})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		v, err := get(snap, it.Value())
		if err != nil {
			return err
		}
		if v == nil {
			continue
		}
		var m Message
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("store: message at %x: %w", it.Value(), err)
		}
		if err := fn(&m); err != nil {
			return err
		}
	}
	return it.Error()
}

// ConversationCarries reports whether a message between a and b, sent at or
// after since (Unix seconds) and visible to viewer, contains needle in its
// MsgBody: the proof that viewer was sent an upload.
func (s *Store) ConversationCarries(a, b, viewer string, since int64, needle []byte) (bool, error) {
	p := historyPrefix(a, b)
	if since < 0 {
		since = 0
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: key(p, u64(uint64(since))), UpperBound: prefixEnd(p)})
	if err != nil {
		return false, err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if !bytes.Contains(it.Value(), needle) {
			continue
		}
		var m Message
		if err := json.Unmarshal(it.Value(), &m); err != nil {
			continue
		}
		if !bytes.Contains(m.MsgBody, needle) {
			continue
		}
		// A blacklisted sender's message never reached its recipient.
		if m.SenderOnly && viewer == m.To && viewer != m.From {
			continue
		}
		return true, nil
	}
	return false, it.Error()
}
