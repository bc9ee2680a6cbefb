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
	// Incoming is the object the device uploads to; the commit copies it to
	// the original's name, out of reach of the upload URL. Empty in records
	// made before: the device uploaded to the original's name.
	Incoming string `json:"Incoming,omitempty"`
	// Removing: the upload's last message is gone and its objects are being
	// deleted; it is no longer served or accepted in messages.
	Removing bool `json:"Removing,omitempty"`
}

func uploadKey(uuid string) []byte { return key([]byte("mu/"), []byte(uuid)) }

func pendingKey(deadline int64, uuid string) []byte {
	return key([]byte("mp/"), u64(uint64(deadline)), []byte(uuid))
}

func grantKey(uuid, user string) []byte {
	return key([]byte("mg/"), []byte(uuid), []byte{sep}, []byte(user))
}

func archiveKey(hour int64) []byte { return key([]byte("ma/"), u64(uint64(hour))) }

// refKey records that the message stored under history key hk carries
// upload uuid; the value is the message's Expire (u64be, 0: never).
func refKey(uuid string, hk []byte) []byte {
	return key([]byte("mr/"), []byte(uuid), []byte{sep}, hk)
}

// checkKey schedules a look at whether committed upload uuid is still
// carried by a message.
func checkKey(at int64, uuid string) []byte {
	return key([]byte("mc/"), u64(uint64(max(at, 0))), []byte(uuid))
}

// dirtyKey marks an hour whose archive misses the message under history key
// hk (stored after the hour was over: an import, or a send that crossed the
// hour's end).
func dirtyKey(hour int64, hk []byte) []byte {
	return key([]byte("mz/"), u64(uint64(max(hour, 0))), hk)
}

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
	// A committed upload no message carries goes at its deadline, like an
	// uncommitted one; one that is carried goes with its last message.
	tx.Put(checkKey(u.Deadline, u.UUID), nil)
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

// mediaElements are the message elements that name uploads, and their
// UUID fields.
var mediaElements = map[string][]string{
	"TIMImageElem":     {"UUID"},
	"TIMSoundElem":     {"UUID"},
	"TIMFileElem":      {"UUID"},
	"TIMVideoFileElem": {"VideoUUID", "ThumbUUID"},
}

// onMessage is PutMessage's media and archive bookkeeping for m, stored
// under history key hk: a reference from each upload m carries (returned,
// to expire with the message), and a mark on m's hour when that hour is
// already over, so its archive is made again with m in it.
func (tx *Tx) onMessage(m *Message, hk []byte) ([][]byte, error) {
	hour := m.MsgTime - m.MsgTime%3600
	if m.MsgTime >= 0 && hour+3600 <= tx.Now().Unix() {
		tx.Put(dirtyKey(hour, hk), nil)
	}
	return tx.mediaRefs(m, hk)
}

// mediaRefs writes a reference from each committed upload m carries to m
// and returns the references' keys.
func (tx *Tx) mediaRefs(m *Message, hk []byte) ([][]byte, error) {
	if !bytes.Contains(m.MsgBody, []byte(`UUID"`)) { // UUID, VideoUUID, ThumbUUID
		return nil, nil
	}
	var els []struct {
		MsgType    string                     `json:"MsgType"`
		MsgContent map[string]json.RawMessage `json:"MsgContent"`
	}
	if json.Unmarshal(m.MsgBody, &els) != nil {
		return nil, nil // not ours to refuse here: the command layer checked it
	}
	var refs [][]byte
	for _, el := range els {
		for _, f := range mediaElements[el.MsgType] {
			var id string
			if json.Unmarshal(el.MsgContent[f], &id) != nil || id == "" {
				continue
			}
			u, err := tx.Upload(id)
			if err != nil {
				return nil, err
			}
			// With partitions, an upload not in this (the sender's)
			// partition is another user's (an App admin's, sent as a user:
			// docs/cluster.md §11.2 item 6) or an external URL: the command
			// layer checked it against every partition. Its reference stays
			// with the sender's copy, where the uploader's cleaner looks
			// (CheckCarried's elsewhere); one naming no upload is unused.
			if u == nil && tx.s.opts.PartitionOf == nil || u != nil && (!u.Committed || u.Removing) {
				continue // an external URL (App admin), not an upload of Duet's
			}
			rk := refKey(id, hk)
			tx.Put(rk, u64(uint64(max(m.Expire, 0))))
			refs = append(refs, rk)
		}
	}
	return refs, nil
}

// DueCheck is a committed upload whose messages are due to be looked at.
type DueCheck struct {
	UUID string
	At   int64
}

// DueChecks returns the committed uploads whose look is due at or before
// now, at most max.
func (s *Store) DueChecks(now time.Time, max int) ([]DueCheck, error) {
	var out []DueCheck
	err := s.due("mc/", now, max, func(uuid string, at int64) { out = append(out, DueCheck{UUID: uuid, At: at}) })
	return out, err
}

// due calls fn for each {time u64be}{uuid} key under prefix whose time is
// at or before now, oldest first, at most max.
func (s *Store) due(prefix string, now time.Time, max int, fn func(uuid string, at int64)) error {
	lower := []byte(prefix)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: key(lower, u64(uint64(now.Unix()+1)))})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok, n := it.First(), 0; ok && n < max; ok, n = it.Next(), n+1 {
		k := it.Key()[len(lower):]
		fn(string(k[8:]), int64(binary.BigEndian.Uint64(k)))
	}
	return it.Error()
}

// recheckLive is how soon an upload carried by a message that never
// expires is looked at again.
const recheckLive = 24 * time.Hour

// CheckCarried decides the fate of committed upload d.UUID at now: while a
// message that has not expired carries it, the look is moved to when the
// last such message expires (keep true). Otherwise the upload is marked
// Removing (no longer served or accepted in messages), its download grants
// and references are deleted, and the look stays due so a removal of its
// objects that fails is retried; the caller removes the objects, then calls
// ForgetUpload. A missing record is forgotten at once (u nil).
//
// elsewhere are the other partitions of a cluster node's store (none on a
// single node): their views are searched for references of messages sent
// by another user than the uploader (carriedElsewhere). The grants of
// users of other partitions are not deleted: a download reads the upload
// record first, which says Removing, then is gone.
func (tx *Tx) CheckCarried(d DueCheck, now time.Time, elsewhere ...*Store) (u *Upload, keep bool, err error) {
	u, err = tx.Upload(d.UUID)
	if err != nil {
		return nil, false, err
	}
	if u == nil {
		tx.Delete(checkKey(d.At, d.UUID))
		return nil, false, nil
	}
	if u.Removing {
		return u, false, nil
	}
	until, live := int64(0), false
	var dead [][]byte
	prefix := key([]byte("mr/"), []byte(d.UUID), []byte{sep})
	err = tx.scan(prefix, func(k, v []byte) error {
		msg, err := tx.Get(k[len(prefix):])
		if err != nil {
			return err
		}
		next, ok := refUntil(v, msg, now)
		if !ok {
			dead = append(dead, k) // the message expired or was deleted
			return nil
		}
		live, until = true, max(until, next)
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	for _, k := range dead {
		tx.Delete(k)
	}
	if len(elsewhere) > 0 {
		u2, live2, err := carriedElsewhere(elsewhere, d.UUID, now)
		if err != nil {
			return nil, false, err
		}
		until, live = max(until, u2), live || live2
	}
	if live {
		tx.Delete(checkKey(d.At, d.UUID))
		tx.Put(checkKey(until, d.UUID), nil)
		return u, true, nil
	}
	u.Removing = true
	b, err := json.Marshal(u)
	if err != nil {
		return nil, false, err
	}
	tx.Put(uploadKey(u.UUID), b)
	// Who was granted it no longer matters: nobody gets it any more.
	err = tx.scan(key([]byte("mg/"), []byte(d.UUID), []byte{sep}), func(k, _ []byte) error {
		tx.Delete(k)
		return nil
	})
	return u, false, err
}

// refUntil reads a media reference whose value is v and whose message's
// record is msg (nil: gone): whether the message still carries the upload
// at now, and when to look again (when it expires, or recheckLive on).
func refUntil(v, msg []byte, now time.Time) (next int64, live bool) {
	expire := int64(0)
	if len(v) == 8 {
		expire = int64(binary.BigEndian.Uint64(v))
	}
	if msg == nil || (expire > 0 && expire <= now.Unix()) {
		return 0, false
	}
	if expire == 0 {
		expire = now.Add(recheckLive).Unix()
	}
	return expire, true
}

// ForgetUpload deletes the records of an upload whose objects were removed
// after CheckCarried gave it up.
func (tx *Tx) ForgetUpload(d DueCheck) {
	tx.Delete(uploadKey(d.UUID))
	tx.Delete(checkKey(d.At, d.UUID))
}

// PrepareMediaLifetimes readies a store whose uploads were committed
// before media followed its messages: it writes the references of every
// message in history that carries an upload, then schedules a look at every
// committed upload. It runs once per store (a marker records that it did),
// so no upload a message still carries is taken for unsent.
//
// A replicated store (cluster mode) has nothing to prepare: a cluster's
// log was only ever written by code that records media references with
// their messages. It skips the step rather than write, since a node is not
// the log's owner when media starts and could not write anyway.
func (s *Store) PrepareMediaLifetimes(now time.Time) error {
	if s.repl != nil || s.parts != nil {
		return nil
	}
	done := []byte("mv/lifetimes")
	if v, err := get(s.db, done); err != nil || v != nil {
		return err
	}
	type carried struct {
		hk []byte
		m  Message
	}
	var batch []carried
	flush := func() error {
		err := s.Update(func(tx *Tx) error {
			for _, c := range batch {
				refs, err := tx.mediaRefs(&c.m, c.hk)
				if err != nil {
					return err
				}
				if c.m.Expire > 0 && len(refs) > 0 {
					tx.ExpireAt(time.Unix(c.m.Expire, 0), refs...)
				}
			}
			return nil
		})
		batch = batch[:0]
		return err
	}
	err := s.scan([]byte("h/"), func(rest, v []byte) error {
		if !bytes.Contains(v, []byte(`UUID`)) {
			return nil
		}
		var m Message
		if json.Unmarshal(v, &m) != nil {
			return nil
		}
		batch = append(batch, carried{key([]byte("h/"), rest), m})
		if len(batch) == 1000 {
			return flush()
		}
		return nil
	})
	if err == nil && len(batch) > 0 {
		err = flush()
	}
	if err != nil {
		return err
	}
	var ids []string
	err = s.scan([]byte("mu/"), func(_, v []byte) error {
		var u Upload
		if json.Unmarshal(v, &u) == nil && u.Committed {
			ids = append(ids, u.UUID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.Update(func(tx *Tx) error {
		for _, id := range ids {
			tx.Put(checkKey(now.Unix(), id), nil)
		}
		tx.Put(done, []byte{1})
		return nil
	})
}

// GetUpload reads an upload record; ErrNotFound when absent.
func (s *Store) GetUpload(uuid string) (*Upload, error) {
	if s.parts != nil {
		return s.getUploadAll(uuid)
	}
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
	var out []Pending
	err := s.due("mp/", now, max, func(uuid string, at int64) { out = append(out, Pending{UUID: uuid, Deadline: at}) })
	return out, err
}

// DeletePending drops a pending entry whose upload record is already gone.
func (tx *Tx) DeletePending(p Pending) {
	k := pendingKey(p.Deadline, p.UUID)
	tx.Delete(k)
	tx.Delete(expiryKey(time.Unix(p.Deadline, 0).Add(uploadGrace), k))
}

// Grant records that user may download upload uuid until expire (Unix
// seconds, 0: no end): found in a message to them that lives until then, so
// the next download needs no history scan. The grant ends with that message.
func (tx *Tx) Grant(uuid, user string, expire int64) {
	tx.Put(grantKey(uuid, user), u64(uint64(max(expire, 0))))
}

// Granted reports whether user holds a grant of upload uuid that has not
// ended.
func (s *Store) Granted(uuid, user string) (bool, error) {
	if o := s.part(user); o != s {
		return o.Granted(uuid, user)
	}
	v, err := get(s.db, grantKey(uuid, user))
	if err != nil || v == nil {
		return false, err
	}
	if len(v) != 8 { // written before grants ended: until the upload goes
		return true, nil
	}
	expire := int64(binary.BigEndian.Uint64(v))
	return expire == 0 || expire > s.Now().Unix(), nil
}

// ArchivedHour returns the record of an archived hour (the Unix time of its
// start), or nil when the hour was not archived yet.
func (s *Store) ArchivedHour(hour int64) ([]byte, error) {
	if s.parts != nil {
		return s.parts[0].ArchivedHour(hour) // partition 0's owner archives
	}
	return get(s.db, archiveKey(hour))
}

// LastArchivedHour is the start of the latest archived hour, or 0.
func (s *Store) LastArchivedHour() (int64, error) {
	if s.parts != nil {
		return s.parts[0].LastArchivedHour()
	}
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

// DirtyMarks returns the marks on hour (see onMessage): read them before
// scanning the hour's messages, and pass them to MarkArchived, which deletes
// them. A mark made after the read stays for the next archive run.
//
// On the front of several partitions the marks are every partition's, each
// key prefixed by its partition's number (SplitMarks).
func (s *Store) DirtyMarks(hour int64) ([][]byte, error) {
	if s.parts != nil {
		return s.dirtyMarksAll(hour)
	}
	var out [][]byte
	prefix := dirtyKey(hour, nil)
	err := s.scan(prefix, func(rest, _ []byte) error {
		out = append(out, key(prefix, rest))
		return nil
	})
	return out, err
}

// DirtyHours returns the distinct hours (ascending, at most max) at or
// before last that carry marks.
func (s *Store) DirtyHours(last int64, max int) ([]int64, error) {
	if s.parts != nil {
		return s.dirtyHoursAll(last, max)
	}
	var out []int64
	for from := int64(0); len(out) < max; {
		lower := dirtyKey(from, nil)
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: dirtyKey(last+1, nil)})
		if err != nil {
			return nil, err
		}
		ok := it.First()
		var hour int64
		if ok {
			hour = int64(binary.BigEndian.Uint64(it.Key()[3:]))
		}
		err = it.Close()
		if err != nil || !ok {
			return out, err
		}
		out = append(out, hour)
		from = hour + 1
	}
	return out, nil
}

// MarkArchived records that hour was archived, with rec (JSON) describing
// the archive object, and deletes the marks the archive covered.
//
// On the front of several partitions it commits in partition 0 (whose
// owner archives) and deletes partition 0's marks only: the caller has the
// other partitions' owners delete theirs first (SplitMarks, ClearMarks).
func (s *Store) MarkArchived(hour int64, rec []byte, marks [][]byte) error {
	if s.parts != nil {
		var own [][]byte
		for _, m := range marks {
			if len(m) > 0 && m[0] == 0 {
				own = append(own, m[1:])
			}
		}
		return s.parts[0].MarkArchived(hour, rec, own)
	}
	return s.Update(func(tx *Tx) error {
		tx.Put(archiveKey(hour), rec)
		for _, k := range marks {
			tx.Delete(k)
		}
		return nil
	})
}

// FirstMessageTime is the time of the oldest message in the time index
// (ok false when there is none).
func (s *Store) FirstMessageTime() (t time.Time, ok bool, err error) {
	if s.parts != nil {
		return s.firstMessageTimeAll()
	}
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
	if s.parts != nil {
		return s.scanMessagesAll(lo, hi, fn)
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
// after since (Unix seconds), visible to viewer and not expired, contains
// needle in its MsgBody: the proof that viewer was sent an upload. expire is
// when the latest-expiring such message goes (0: never).
func (s *Store) ConversationCarries(a, b, viewer string, since int64, needle []byte) (expire int64, ok bool, err error) {
	if o := s.part(viewer); o != s {
		return o.ConversationCarries(a, b, viewer, since, needle)
	}
	p := historyPrefix(a, b)
	if since < 0 {
		since = 0
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: key(p, u64(uint64(since))), UpperBound: prefixEnd(p)})
	if err != nil {
		return 0, false, err
	}
	defer it.Close()
	now := s.Now().Unix()
	for more := it.First(); more; more = it.Next() {
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
		if m.Expire > 0 && m.Expire <= now {
			continue // expired, not yet swept
		}
		if !ok || (expire != 0 && (m.Expire == 0 || m.Expire > expire)) {
			expire = m.Expire
		}
		ok = true
	}
	return expire, ok, it.Error()
}
