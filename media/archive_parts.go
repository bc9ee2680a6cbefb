package media

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/store"
)

// With several partitions one node archives each hour across all of them
// (docs/cluster.md §14.4): partition 0's owner, which records the hour in
// partition 0 (ma/). The late-archive marks an archive covered are in the
// partitions of the marked messages' senders, and only their owners can
// delete them: the archiver has each owner do so through the router, as
// the signed internal command clearMarksCommand, before it records the
// hour. A mark a failed clear leaves makes the hour archived again later
// (archiving is idempotent).

// clearMarksCommand deletes covered archive marks on the owner of the
// partition of User.
const clearMarksCommand = "media/clear_archive_marks"

// clearMarksRequest is clearMarksCommand's body.
type clearMarksRequest struct {
	Hour  int64    `json:"Hour"`
	User  string   `json:"User"`
	Marks [][]byte `json:"Marks"`
	Sig   string   `json:"Sig"` // clearMarksSig of the rest
}

// clearMarksSig signs a request with the UserSig key, which every node of
// a cluster shares and no client knows.
func (m *Service) clearMarksSig(r clearMarksRequest) string {
	h := hmac.New(sha256.New, []byte(m.cfg.Key))
	fmt.Fprintf(h, "duet media archive marks\x00%d\x00%s", r.Hour, r.User)
	for _, k := range r.Marks {
		fmt.Fprintf(h, "\x00%x", k)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// clearOtherMarks has the owners of partitions other than 0 delete the
// marks of theirs an archive of hour covered (DirtyMarks' keys).
func (m *Service) clearOtherMarks(ctx context.Context, hour int64, marks [][]byte) error {
	if m.st.Partitions() == 1 || len(marks) == 0 {
		return nil
	}
	groups, err := m.st.SplitMarks(marks)
	if err != nil {
		return err
	}
	parts := make([]int, 0, len(groups))
	for p := range groups {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	for _, p := range parts {
		if p == 0 {
			continue // MarkArchived deletes them with the hour's record
		}
		g := groups[p]
		r := clearMarksRequest{Hour: hour, User: g.User, Marks: g.Keys}
		r.Sig = m.clearMarksSig(r)
		body, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if m.cfg.Exec == nil { // every partition is this process's
			err = m.st.UpdateFor(g.User, func(tx *store.Tx) error { return tx.ClearMarks(g.Keys) })
		} else if e := m.cfg.Exec.Exec(ctx, &command.Caller{UserID: g.User, Transport: command.REST}, clearMarksCommand, body).Err; e != nil {
			err = e
		}
		if err != nil {
			return fmt.Errorf("partition %d's archive marks: %w", p, err)
		}
	}
	return nil
}

func (m *Service) clearMarks(ctx context.Context, c *command.Caller, body []byte) (any, error) {
	var r clearMarksRequest
	if json.Unmarshal(body, &r) != nil || r.Sig == "" || !hmac.Equal([]byte(r.Sig), []byte(m.clearMarksSig(r))) {
		return nil, command.Errorf(command.CodeUnknownCommand, "unknown command %q", clearMarksCommand)
	}
	return nil, m.st.UpdateFor(r.User, func(tx *store.Tx) error { return tx.ClearMarks(r.Marks) })
}
