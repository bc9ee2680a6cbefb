package media

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/store"
)

// Message-record archives (Tencent's open_msg_svc/get_history): each hour's
// C2C messages, one JSON object a line, gzip'd, in the bucket under
// archive/C2C/{YYYYMMDDHH}.json.gz. Hours are UTC.
//
// An hour is archived only once it is over, in order, and its completion is
// recorded in the store (ma/{hour}) after the object is written. A restart
// resumes after the last recorded hour: an hour whose object was written but
// not recorded is written again under the same name with the same bytes (the
// same messages in the same order, gzip without a timestamp), so no hour is
// lost or doubled.

// archiveRecord is what the store keeps of an archived hour.
type archiveRecord struct {
	Object   string `json:"Object,omitempty"` // empty: no messages that hour
	Count    int    `json:"Count"`
	FileSize int64  `json:"FileSize"`
	FileMD5  string `json:"FileMD5"`
	GzipSize int64  `json:"GzipSize"`
	GzipMD5  string `json:"GzipMD5"`
}

// archiveLine is one message of an archive.
type archiveLine struct {
	ChatType        string          `json:"ChatType"`
	MsgTimestamp    int64           `json:"MsgTimestamp"`
	From            string          `json:"From_Account"`
	To              string          `json:"To_Account"`
	MsgSeq          uint32          `json:"MsgSeq"`
	MsgRandom       uint32          `json:"MsgRandom"`
	MsgKey          string          `json:"MsgKey"`
	MsgBody         json.RawMessage `json:"MsgBody"`
	CloudCustomData string          `json:"CloudCustomData,omitempty"`
	MsgFlagBits     int             `json:"MsgFlagBits,omitempty"`
}

const hourLayout = "2006010215"

func archiveObject(hour time.Time) string {
	return "archive/C2C/" + hour.UTC().Format(hourLayout) + ".json.gz"
}

// archiveGrace is how long after an hour ends it is archived: a send takes
// its MsgTime before its commit, so the last second's messages may land a
// moment after the hour is over.
const archiveGrace = time.Minute

// maxHoursPerRun bounds one ArchiveDue call (a long outage is caught up
// over several runs).
const maxHoursPerRun = 24 * 7

// ArchiveDue archives every hour that is over and not archived yet.
func (m *Service) ArchiveDue(ctx context.Context) error {
	m.archiveMu.Lock()
	defer m.archiveMu.Unlock()
	if m.cfg.CatchUp != nil && m.st.Partitions() > 1 {
		// This node reads the other partitions from its views: they
		// must hold what their logs held when the run began (a message
		// committed by the hour's end, with no mark, is archived now or
		// never; docs/cluster.md §14.4).
		if err := m.cfg.CatchUp(ctx); err != nil {
			return err
		}
	}
	last, err := m.st.LastArchivedHour()
	if err != nil {
		return err
	}
	var next time.Time
	if last > 0 {
		next = time.Unix(last, 0).Add(time.Hour)
	} else {
		first, ok, err := m.st.FirstMessageTime()
		if err != nil || !ok {
			return err
		}
		next = first.UTC().Truncate(time.Hour)
	}
	now := m.now()
	for i := 0; i < maxHoursPerRun && !next.Add(time.Hour+archiveGrace).After(now); i++ {
		if err := m.archiveHour(ctx, next); err != nil {
			return fmt.Errorf("archive %s: %w", next.UTC().Format(hourLayout), err)
		}
		next = next.Add(time.Hour)
	}
	// Hours that were archived (or lie before the first archived hour) and
	// have since been given messages (imports, or a send that crossed the
	// hour's end) are archived again, whole.
	last, err = m.st.LastArchivedHour()
	if err != nil || last == 0 {
		return err
	}
	dirty, err := m.st.DirtyHours(last, maxHoursPerRun)
	if err != nil {
		return err
	}
	for _, h := range dirty {
		if err := m.archiveHour(ctx, time.Unix(h, 0)); err != nil {
			return fmt.Errorf("archive %s again: %w", time.Unix(h, 0).UTC().Format(hourLayout), err)
		}
	}
	return nil
}

func (m *Service) archiveHour(ctx context.Context, hour time.Time) error {
	// The marks are read before the messages: a message stored after this
	// read leaves a mark that stays for the next run.
	marks, err := m.st.DirtyMarks(hour.Unix())
	if err != nil {
		return err
	}
	var raw bytes.Buffer
	n := 0
	enc := json.NewEncoder(&raw)
	enc.SetEscapeHTML(false)
	err = m.st.ScanMessages(hour, hour.Add(time.Hour), func(msg *store.Message) error {
		n++
		return enc.Encode(archiveLine{
			ChatType: "C2C", MsgTimestamp: msg.MsgTime, From: msg.From, To: msg.To, MsgSeq: msg.MsgSeq,
			MsgRandom: msg.MsgRandom, MsgKey: msg.MsgKey, MsgBody: msg.MsgBody,
			CloudCustomData: msg.CloudCustomData, MsgFlagBits: msg.MsgFlagBits,
		})
	})
	if err != nil {
		return err
	}
	rec := archiveRecord{Count: n}
	if n == 0 {
		// Made again after its messages went: the old object goes too.
		if old, err := m.st.ArchivedHour(hour.Unix()); err == nil && old != nil {
			var r archiveRecord
			if json.Unmarshal(old, &r) == nil && r.Object != "" {
				if err := m.s3.api.RemoveObject(ctx, m.cfg.S3.Bucket, r.Object, minio.RemoveObjectOptions{}); err != nil {
					return err
				}
			}
		}
	}
	if n > 0 {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz) // no name, no ModTime: the same input gives the same bytes
		zw.Write(raw.Bytes())
		if err := zw.Close(); err != nil {
			return err
		}
		fm, gm := md5.Sum(raw.Bytes()), md5.Sum(gz.Bytes())
		rec = archiveRecord{
			Object: archiveObject(hour), Count: n,
			FileSize: int64(raw.Len()), FileMD5: hex.EncodeToString(fm[:]),
			GzipSize: int64(gz.Len()), GzipMD5: hex.EncodeToString(gm[:]),
		}
		if e := m.ensureBucket(ctx); e != nil {
			return e
		}
		if _, err := m.s3.api.PutObject(ctx, m.cfg.S3.Bucket, rec.Object, bytes.NewReader(gz.Bytes()), int64(gz.Len()),
			minio.PutObjectOptions{ContentType: "application/gzip"}); err != nil {
			return err
		}
	}
	// With several partitions their owners delete their marks first
	// (archive_parts.go); a single store deletes them with the record.
	if err := m.clearOtherMarks(ctx, hour.Unix(), marks); err != nil {
		return err
	}
	b, _ := json.Marshal(rec)
	return m.st.MarkArchived(hour.Unix(), b, marks)
}

// HistoryFile is one entry of get_history's file list.
type HistoryFile struct {
	URL        string `json:"URL"`
	ExpireTime string `json:"ExpireTime"`
	FileSize   int64  `json:"FileSize"`
	FileMD5    string `json:"FileMD5"`
	GzipSize   int64  `json:"GzipSize"`
	GzipMD5    string `json:"GzipMD5"`
}

// HistoryResult answers open_msg_svc/get_history. Tencent's documents name
// the list File (schema) and File_List (the wording); both carry it.
type HistoryResult struct {
	File     []HistoryFile `json:"File"`
	FileList []HistoryFile `json:"File_List"`
}

func (m *Service) getHistory(ctx context.Context, c *command.Caller, body []byte) (any, error) {
	if !c.Admin {
		return nil, command.Errorf(command.CodeOpenIMNeedsAdmin, "open_msg_svc/get_history is for the App admin only")
	}
	var req struct {
		ChatType string `json:"ChatType"`
		MsgTime  string `json:"MsgTime"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, command.Errorf(CodeBadRequest, "ChatType and MsgTime must be Strings")
	}
	if req.ChatType != "C2C" {
		return nil, command.Errorf(CodeBadRequest, "ChatType must be C2C (Duet has no groups)")
	}
	hour, err := time.ParseInLocation(hourLayout, req.MsgTime, time.UTC)
	if err != nil || len(req.MsgTime) != len(hourLayout) {
		return nil, command.Errorf(CodeBadRequest, "MsgTime must be an hour as YYYYMMDDHH (UTC), e.g. 2015120121")
	}
	raw, err := m.st.ArchivedHour(hour.Unix())
	if err != nil {
		return nil, err
	}
	if raw == nil {
		if e := m.notArchived(hour, req.MsgTime); e != nil {
			return nil, e
		}
		// An hour that is over and had no messages: nothing to archive.
		return HistoryResult{File: []HistoryFile{}, FileList: []HistoryFile{}}, nil
	}
	var rec archiveRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, err
	}
	files := []HistoryFile{}
	if rec.Object != "" {
		u, err := m.s3.presign.PresignedGetObject(ctx, m.cfg.S3.Bucket, rec.Object, m.cfg.ArchiveTTL, nil)
		if err != nil {
			return nil, unavailable(err)
		}
		files = append(files, HistoryFile{
			URL: u.String(), ExpireTime: time.Now().Add(m.cfg.ArchiveTTL).UTC().Format("2006-01-02 15:04:05"),
			FileSize: rec.FileSize, FileMD5: rec.FileMD5, GzipSize: rec.GzipSize, GzipMD5: rec.GzipMD5,
		})
	}
	return HistoryResult{File: files, FileList: files}, nil
}

// notArchived explains why an hour without an archive record has none yet
// (95006), or returns nil when it is over and had no messages: the archiver
// starts at the first message and records no hour before it, so an empty
// hour before then (or one whose record is still to come) answers an empty
// list rather than waiting for an archive that will never be made.
func (m *Service) notArchived(hour time.Time, name string) error {
	if hour.Add(time.Hour + archiveGrace).After(m.now()) {
		return command.Errorf(CodeNoArchive, "no archive for %s yet: an hour is archived within minutes after it is over", name)
	}
	marks, err := m.st.DirtyMarks(hour.Unix())
	if err != nil {
		return err
	}
	empty := len(marks) == 0
	if empty {
		err = m.st.ScanMessages(hour, hour.Add(time.Hour), func(*store.Message) error {
			empty = false
			return errFound
		})
		if err != nil && err != errFound {
			return err
		}
	}
	if !empty {
		return command.Errorf(CodeNoArchive, "no archive for %s yet: it has messages and the archiver has not reached it; retry in a few minutes", name)
	}
	return nil
}
