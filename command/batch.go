package command

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
)

// openim/batchsendmsg (reference §5.2): one message to up to 500 users, by
// an admin, as From_Account or as the system. Each recipient's copy is an
// ordinary openim/sendmsg run through sendMsg — the same parsing,
// validation, storage, multi-device sync, SenderProfile and resend rule
// (PROTOCOL §3, per recipient) — with three fields fixed once for all
// copies: MsgSeq and MsgTimeStamp (so every copy has the one MsgKey the
// reply names) and ForbidCallbackControl (batch sends trigger no
// callbacks). A MsgSeq the batch chose is not the request's: a copy is
// still a resend by its body or second, as a sendmsg without MsgSeq is.
// The copies run concurrently, so the store commits them in a few groups
// rather than one fsync each.

const (
	maxBatchRecipients = 500
	batchWorkers       = 32
)

type batchError struct {
	To        string `json:"To_Account"`
	ErrorCode int    `json:"ErrorCode"`
	ErrorInfo string `json:"ErrorInfo,omitempty"`
}

type batchResult struct {
	MsgKey    string       `json:"MsgKey"`
	ErrorList []batchError `json:"ErrorList,omitempty"`
}

// ActionStatus is "SomeError" when some recipients failed (§5.2).
func (r batchResult) ActionStatus() string {
	if len(r.ErrorList) > 0 {
		return "SomeError"
	}
	return "OK"
}

// batchRequest is batchsendmsg's: the recipients and the one sendmsg
// request every copy is, but for its To_Account.
type batchRequest struct {
	to []string // without repeats, in the caller's order
	// msg is the copies' request; msgErr, when set, is why it is invalid,
	// the error of every copy to a valid recipient.
	msg    sendRequest
	msgErr error
}

func (r *batchRequest) decode(s *Service, c *Caller, f fields) error {
	to, present, ok := f.strings("To_Account")
	if !ok || !present || len(to) == 0 {
		return Errorf(CodeToAccount, "To_Account is missing or is not a non-empty Array of String")
	}
	// Repeated recipients get one copy.
	seen := make(map[string]bool, len(to))
	for _, u := range to {
		if !seen[u] {
			seen[u] = true
			r.to = append(r.to, u)
		}
	}
	if len(r.to) > maxBatchRecipients {
		return Errorf(CodeTooManyRecipients, "To_Account has %d users; the limit is %d", len(r.to), maxBatchRecipients)
	}
	if ts, _, _ := f.integer("MsgTimeStamp", 0, 1<<32-1); ts <= 0 {
		f["MsgTimeStamp"] = json.RawMessage(strconv.FormatInt(s.store.Now().Unix(), 10))
	}
	// Every copy is this one request to its own recipient.
	f["To_Account"] = json.RawMessage(`"-"`)
	r.msgErr = r.msg.decode(s, c, f)
	r.msg.forbidBefore, r.msg.forbidAfter, r.msg.forbidBad = true, true, false
	return nil
}

func (s *Service) batchSendMsg(ctx context.Context, c *Caller, r *batchRequest) (any, error) {
	uniq := r.to
	seq := secondOrder(s.store.Now()) // for the copies, when the request gives no MsgSeq
	var (
		mu     sync.Mutex
		res    batchResult
		errs   = make(map[string]*Error)
		failed error
		jobs   = make(chan string)
		wg     sync.WaitGroup
	)
	for w := 0; w < min(batchWorkers, len(uniq)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range jobs {
				sr, e := s.batchOneGuarded(ctx, c, r, u, seq)
				mu.Lock()
				var ce *Error
				switch {
				case e == nil:
					if res.MsgKey == "" {
						res.MsgKey = sr.MsgKey
					}
				case errors.As(e, &ce):
					errs[u] = ce
				default:
					failed = e
				}
				mu.Unlock()
			}
		}()
	}
	for _, u := range uniq {
		jobs <- u
	}
	close(jobs)
	wg.Wait()
	if failed != nil {
		return nil, failed
	}
	for _, u := range uniq { // in the caller's order
		if e := errs[u]; e != nil {
			res.ErrorList = append(res.ErrorList, batchError{To: u, ErrorCode: e.Code, ErrorInfo: e.Info})
		}
	}
	if len(res.ErrorList) == len(uniq) {
		// All failed: one request-level error (§5.2's "all failed" form).
		first := errs[uniq[0]]
		for _, e := range res.ErrorList {
			if e.ErrorCode != CodeAccountNotExist {
				return nil, first
			}
		}
		return nil, Errorf(CodeToNotRegistered, "invalid To_Account: none of the %d users exists", len(uniq))
	}
	return res, nil
}

// batchOne sends the batch's copy to one recipient; seq is its MsgSeq when
// the request has none.
// batchOneGuarded is batchOne on a worker goroutine, where Exec's recover
// does not reach: a panic is that recipient's error (20005 or 91000), not
// the end of the process.
func (s *Service) batchOneGuarded(ctx context.Context, c *Caller, b *batchRequest, to string, seq uint32) (r SendResult, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = s.Recovered(v, "openim/batchsendmsg", c.UserID)
		}
	}()
	return s.batchOne(ctx, c, b, to, seq)
}

func (s *Service) batchOne(ctx context.Context, c *Caller, b *batchRequest, to string, seq uint32) (SendResult, error) {
	if !ValidUserID(to) {
		return SendResult{}, Errorf(CodeAccountNotExist, "%q is not a valid UserID", to)
	}
	if ok, err := s.store.AccountExists(to); err != nil {
		return SendResult{}, err
	} else if !ok {
		return SendResult{}, Errorf(CodeAccountNotExist, "%s does not exist", to)
	}
	if b.msgErr != nil {
		return SendResult{}, b.msgErr
	}
	req := b.msg // a copy: sending fills in its MsgSeq and may rewrite it
	req.To = to
	if !req.HasMsgSeq {
		req.MsgSeq, req.seqChosen = seq, true
	}
	r, err := s.sendMsg(ctx, c, &req)
	if err != nil {
		return SendResult{}, err
	}
	sr, ok := r.(SendResult)
	if !ok {
		return SendResult{}, errors.New("batchsendmsg: unexpected sendmsg result")
	}
	return sr, nil
}
