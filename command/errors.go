package command

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"unicode/utf8"
)

// The error codes Duet answers with, by name. They are Tencent's (reference
// §1.3, §5.x, §6.x, §7) except the 950xx media codes, which are Duet's own.
// Every code a command, transport or the media and push packages sends is
// here, and codeTable below gives each its meaning, its kind and its MQTT 5
// reason code:
// whatever sorts codes (PUBACK reasons, logging, the importer's retries)
// asks KindOf or MQTTReason instead of listing numbers.
const (
	// Messages (openim, C2C; reference §7.3).
	CodeBadPacket        = 20001
	CodeUnknownUser      = 20003
	CodeNetworkRetry     = 20004
	CodeRetry            = 20005
	CodeCallbackRefused  = 20006
	CodeBlacklisted      = 20007
	CodeNotFriends       = 20009
	CodeNotInPeerFriends = 20010
	CodeNotInOwnFriends  = 20011
	CodeMuted            = 20012
	CodeRecallTooLate    = 20016
	CodeMsgNotFound      = 20022
	CodeMsgRecalled      = 20023

	// Relationships (sns; reference §7).
	CodeSNSParam            = 30001
	CodeSNSNoUser           = 30003
	CodeSNSNeedsAdmin       = 30004
	CodeSNSAddForbidden     = 30009
	CodeSNSFriendsFull      = 30010
	CodeSNSGroupsFull       = 30011
	CodeSNSPendingFull      = 30012
	CodeSNSBlacklistFull    = 30013
	CodeSNSPeerFriendsFull  = 30014
	CodeSNSPeerBlacklisted  = 30515
	CodeSNSPeerDeniesAll    = 30516
	CodeSNSInPeerBlacklist  = 30525
	CodeSNSPending          = 30539
	CodeSNSNoPending        = 30614
	CodeSNSNotFriends       = 31704
	CodeSNSGroupNotFriend   = 32216
	CodeProfileParam        = 40001
	CodeProfileNoTarget     = 40002
	CodeProfileNoUser       = 40003
	CodeProfileNeedsAdmin   = 40004
	CodeProfileNoWrite      = 40008
	CodeProfileUnknownTag   = 40009
	CodeProfileTooLong      = 40601
	CodeProfileBadValue     = 40605
	CodeProfileTypeMismatch = 40610
	CodeContactNoUser       = 50001
	CodeContactParam        = 50002
	CodeContactNeedsAdmin   = 50003
	CodeMuteParam           = 130001
	CodeMuteNoAccount       = 130004
	CodeMuteBadAccount      = 130005
	CodeMuteNoTime          = 130008
	CodeMuteSystem          = 130014
	CodeCallbackCustomFirst = 120001
	CodeCallbackCustomLast  = 130000
	CodeMediaRefused        = 95001
	CodeMediaContent        = 95002
	CodeMediaUnknown        = 95003
	CodeMediaNotUploaded    = 95004
	CodeMediaUnavailable    = 95005
	CodeMediaNoArchive      = 95006
	CodeBadURL              = 60002
	CodeBadBody             = 60003
	CodeBadIdentifier       = 60004
	CodeBadSDKAppID         = 60006
	CodeRateLimited         = 60007
	CodeBadHTTPRequest      = 60008
	CodeUnknownCommand      = 60009
	CodeNeedsAdmin          = 60010
	CodeAppRateLimited      = 60011
	CodeNoSDKAppID          = 60012
	CodeTooFrequent         = 60018
	CodeTooFrequentRetry    = 60019
	CodeSigExpired          = 70001
	CodeSigEmpty            = 70002
	CodeSigInvalid          = 70003
	CodeSigBad              = 70009
	CodeSigIdentifier       = 70013
	CodeSigSDKAppID         = 70014
	CodeAccountNotExist     = 70107
	CodeAccountParam        = 70402
	CodeAccountNeedsAdmin   = 70403
	CodeBodyTooLong         = 80002
	CodeCallbackFailed      = 80003
	CodeJSON                = 90001
	CodeMsgBody             = 90002
	CodeToAccount           = 90003
	CodeMsgRandom           = 90005
	CodeMsgTimeStamp        = 90006
	CodeMsgBodyNotArray     = 90007
	CodeFromAccount         = 90008
	CodeOpenIMNeedsAdmin    = 90009
	CodeElement             = 90010
	CodeTooManyRecipients   = 90011
	CodeToNotRegistered     = 90012
	CodeLifeTime            = 90026
	CodeSyncFromOldSystem   = 90030
	CodeSyncOtherMachine    = 90031
	CodeOfflinePushInfo     = 90043
	CodeMsgLifeTime         = 90044
	CodeMsgKey              = 90054
	CodeBatchTooLong        = 90055
	CodeCallbackTimeout     = 90992
	CodeServiceError        = 90994
	CodeServiceBusy         = 90995
	CodeInternal            = 91000
	CodeTooLong             = 93000
)

// Kind sorts error codes by what the caller can do about them.
type Kind int

const (
	KindUnknown    Kind = iota // not in the table
	KindParameter              // the request is malformed: fix it
	KindPermission             // not allowed (identity, admin, relationship, policy)
	KindNotFound               // a named user, message or request does not exist
	KindQuota                  // a size or count limit
	KindRetryLater             // transient: the same request may succeed later
	KindInternal               // the server failed; a retry may help
)

var kindNames = [...]string{"unknown", "parameter", "permission", "not found", "quota", "retry later", "internal"}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// Retryable reports whether the same request may succeed later unchanged.
func (k Kind) Retryable() bool { return k == KindRetryLater || k == KindInternal }

// MQTT 5 reason codes a failed request's PUBACK carries (MQTT 5 §3.4.2.1).
const (
	ReasonUnspecified    byte = 0x80
	ReasonImplementation byte = 0x83
	ReasonNotAuthorized  byte = 0x87
	ReasonQuotaExceeded  byte = 0x97
	ReasonPayloadFormat  byte = 0x99
)

// reason is the PUBACK reason code of each kind; a code may override it.
func (k Kind) reason() byte {
	switch k {
	case KindParameter:
		return ReasonPayloadFormat
	case KindPermission:
		return ReasonNotAuthorized
	case KindQuota:
		return ReasonQuotaExceeded
	case KindRetryLater, KindInternal:
		return ReasonImplementation
	default:
		return ReasonUnspecified // not found, and anything unlisted
	}
}

// CodeInfo is one row of the error table.
type CodeInfo struct {
	Code   int
	Name   string // the Go constant above
	What   string // what it means
	Kind   Kind
	Reason byte // MQTT 5 PUBACK reason code
}

type row struct {
	code   int
	name   string
	what   string
	kind   Kind
	reason byte // 0: the kind's
}

// codeTable is the one place codes are sorted into kinds.
var codeTable = []row{
	{CodeBadPacket, "CodeBadPacket", "invalid request (openim/sync's own refusals)", KindParameter, 0},
	{CodeUnknownUser, "CodeUnknownUser", "sender or recipient not imported (a user's own send)", KindNotFound, 0},
	{CodeNetworkRetry, "CodeNetworkRetry", "network error, retry", KindRetryLater, 0},
	{CodeRetry, "CodeRetry", "internal error or shutting down, retry", KindRetryLater, 0},
	{CodeCallbackRefused, "CodeCallbackRefused", "the before-send callback refused the message", KindPermission, 0},
	{CodeBlacklisted, "CodeBlacklisted", "the recipient blacklisted the sender (with --blacklist-check-error)", KindPermission, 0},
	{CodeNotFriends, "CodeNotFriends", "friend check: the two are not friends", KindPermission, 0},
	{CodeNotInPeerFriends, "CodeNotInPeerFriends", "friend check: the sender is not in the recipient's list", KindPermission, 0},
	{CodeNotInOwnFriends, "CodeNotInOwnFriends", "friend check: the recipient is not in the sender's list", KindPermission, 0},
	{CodeMuted, "CodeMuted", "the sender is C2C-muted", KindPermission, 0},
	{CodeRecallTooLate, "CodeRecallTooLate", "the recall window has passed", KindPermission, 0},
	{CodeMsgNotFound, "CodeMsgNotFound", "no message with that MsgKey", KindNotFound, 0},
	{CodeMsgRecalled, "CodeMsgRecalled", "the message was already recalled", KindNotFound, 0},

	{CodeSNSParam, "CodeSNSParam", "bad parameters (also an item's \"already exists\")", KindParameter, 0},
	{CodeSNSNoUser, "CodeSNSNoUser", "no such user", KindNotFound, 0},
	{CodeSNSNeedsAdmin, "CodeSNSNeedsAdmin", "needs an App admin", KindPermission, 0},
	{CodeSNSAddForbidden, "CodeSNSAddForbidden", "the user is forbidden to add friends", KindPermission, 0},
	{CodeSNSFriendsFull, "CodeSNSFriendsFull", "own friend list full", KindQuota, 0},
	{CodeSNSGroupsFull, "CodeSNSGroupsFull", "too many friend groups", KindQuota, 0},
	{CodeSNSPendingFull, "CodeSNSPendingFull", "too many pending requests", KindQuota, 0},
	{CodeSNSBlacklistFull, "CodeSNSBlacklistFull", "blacklist full", KindQuota, 0},
	{CodeSNSPeerFriendsFull, "CodeSNSPeerFriendsFull", "the peer's friend list is full", KindQuota, 0},
	{CodeSNSPeerBlacklisted, "CodeSNSPeerBlacklisted", "the peer is in my blacklist", KindPermission, 0},
	{CodeSNSPeerDeniesAll, "CodeSNSPeerDeniesAll", "the peer refuses all friend requests", KindPermission, 0},
	{CodeSNSInPeerBlacklist, "CodeSNSInPeerBlacklist", "I am in the peer's blacklist", KindPermission, 0},
	{CodeSNSPending, "CodeSNSPending", "the peer must confirm: a pending request was made", KindPermission, 0},
	{CodeSNSNoPending, "CodeSNSNoPending", "no such pending request", KindNotFound, 0},
	{CodeSNSNotFriends, "CodeSNSNotFriends", "not friends (friend_delete)", KindNotFound, 0},
	{CodeSNSGroupNotFriend, "CodeSNSGroupNotFriend", "a group member is not a friend", KindNotFound, 0},

	{CodeProfileParam, "CodeProfileParam", "profile: bad parameters", KindParameter, 0},
	{CodeProfileNoTarget, "CodeProfileNoTarget", "profile: To_Account missing", KindParameter, 0},
	{CodeProfileNoUser, "CodeProfileNoUser", "profile: no such user", KindNotFound, 0},
	{CodeProfileNeedsAdmin, "CodeProfileNeedsAdmin", "profile: needs an App admin", KindPermission, 0},
	{CodeProfileNoWrite, "CodeProfileNoWrite", "profile: the tag is not writable by the user", KindPermission, 0},
	{CodeProfileUnknownTag, "CodeProfileUnknownTag", "profile: unknown tag", KindParameter, 0},
	{CodeProfileTooLong, "CodeProfileTooLong", "profile: value over 500 bytes", KindQuota, 0},
	{CodeProfileBadValue, "CodeProfileBadValue", "profile: bad value for a standard tag", KindParameter, 0},
	{CodeProfileTypeMismatch, "CodeProfileTypeMismatch", "profile: value of the wrong type", KindParameter, 0},

	{CodeContactNoUser, "CodeContactNoUser", "recentcontact: user not imported", KindNotFound, 0},
	{CodeContactParam, "CodeContactParam", "recentcontact: bad parameters", KindParameter, 0},
	{CodeContactNeedsAdmin, "CodeContactNeedsAdmin", "recentcontact: needs an App admin", KindPermission, 0},

	{CodeBadURL, "CodeBadURL", "REST: bad URL", KindParameter, 0},
	{CodeBadBody, "CodeBadBody", "REST: request body not JSON", KindParameter, 0},
	{CodeBadIdentifier, "CodeBadIdentifier", "REST: identifier missing or invalid", KindPermission, 0},
	{CodeBadSDKAppID, "CodeBadSDKAppID", "REST: SDKAppID invalid", KindPermission, 0},
	// Rate limits: a retry later succeeds, and the PUBACK says "quota".
	{CodeRateLimited, "CodeRateLimited", "REST call frequency over the limit", KindRetryLater, ReasonQuotaExceeded},
	{CodeBadHTTPRequest, "CodeBadHTTPRequest", "REST: malformed HTTP request (method, body)", KindParameter, 0},
	{CodeUnknownCommand, "CodeUnknownCommand", "no such command", KindNotFound, 0},
	{CodeNeedsAdmin, "CodeNeedsAdmin", "needs an App admin (common layer)", KindPermission, 0},
	{CodeAppRateLimited, "CodeAppRateLimited", "SDKAppID-level frequency over the limit", KindRetryLater, ReasonQuotaExceeded},
	{CodeNoSDKAppID, "CodeNoSDKAppID", "REST: sdkappid missing", KindPermission, 0},
	{CodeTooFrequent, "CodeTooFrequent", "too frequent, retry later", KindRetryLater, ReasonQuotaExceeded},
	{CodeTooFrequentRetry, "CodeTooFrequentRetry", "too frequent, retry later", KindRetryLater, ReasonQuotaExceeded},

	{CodeSigExpired, "CodeSigExpired", "UserSig expired (or issued before a kick)", KindPermission, 0},
	{CodeSigEmpty, "CodeSigEmpty", "UserSig missing", KindPermission, 0},
	{CodeSigInvalid, "CodeSigInvalid", "UserSig does not decode", KindPermission, 0},
	{CodeSigBad, "CodeSigBad", "UserSig signature check failed", KindPermission, 0},
	{CodeSigIdentifier, "CodeSigIdentifier", "UserSig of another identifier", KindPermission, 0},
	{CodeSigSDKAppID, "CodeSigSDKAppID", "UserSig of another SDKAppID", KindPermission, 0},
	{CodeAccountNotExist, "CodeAccountNotExist", "the account does not exist", KindNotFound, 0},
	{CodeAccountParam, "CodeAccountParam", "account commands: bad parameters", KindParameter, 0},
	{CodeAccountNeedsAdmin, "CodeAccountNeedsAdmin", "account commands: needs an App admin", KindPermission, 0},

	{CodeBodyTooLong, "CodeBodyTooLong", "message body too long", KindQuota, 0},
	{CodeCallbackFailed, "CodeCallbackFailed", "before-send callback failed, message refused", KindPermission, 0},

	{CodeJSON, "CodeJSON", "openim: JSON malformed or a field of the wrong type", KindParameter, 0},
	{CodeMsgBody, "CodeMsgBody", "MsgBody malformed", KindParameter, 0},
	{CodeToAccount, "CodeToAccount", "To_Account missing or malformed", KindParameter, 0},
	{CodeMsgRandom, "CodeMsgRandom", "MsgRandom missing or not an Integer", KindParameter, 0},
	{CodeMsgTimeStamp, "CodeMsgTimeStamp", "MsgTimeStamp missing or not an Integer", KindParameter, 0},
	{CodeMsgBodyNotArray, "CodeMsgBodyNotArray", "MsgBody missing or not an Array", KindParameter, 0},
	{CodeFromAccount, "CodeFromAccount", "From_Account missing or unknown", KindParameter, 0},
	{CodeOpenIMNeedsAdmin, "CodeOpenIMNeedsAdmin", "openim: needs an App admin", KindPermission, 0},
	{CodeElement, "CodeElement", "a MsgBody element malformed (or its media unknown)", KindParameter, 0},
	{CodeTooManyRecipients, "CodeTooManyRecipients", "over 500 recipients", KindQuota, 0},
	{CodeToNotRegistered, "CodeToNotRegistered", "To_Account not registered (REST and admin sends)", KindNotFound, 0},
	{CodeLifeTime, "CodeLifeTime", "MsgLifeTime out of range", KindParameter, 0},
	{CodeSyncFromOldSystem, "CodeSyncFromOldSystem", "SyncFromOldSystem not an Integer", KindParameter, 0},
	{CodeSyncOtherMachine, "CodeSyncOtherMachine", "SyncOtherMachine not an Integer", KindParameter, 0},
	{CodeOfflinePushInfo, "CodeOfflinePushInfo", "OfflinePushInfo malformed", KindParameter, 0},
	{CodeMsgLifeTime, "CodeMsgLifeTime", "MsgLifeTime not an Integer", KindParameter, 0},
	{CodeMsgKey, "CodeMsgKey", "MsgKey malformed", KindParameter, 0},
	{CodeBatchTooLong, "CodeBatchTooLong", "batch body too long", KindQuota, 0},
	{CodeCallbackTimeout, "CodeCallbackTimeout", "the callback server does not answer; internal, retry", KindInternal, 0},
	{CodeServiceError, "CodeServiceError", "internal error, retry", KindInternal, 0},
	{CodeServiceBusy, "CodeServiceBusy", "internal error, retry", KindInternal, 0},
	{CodeInternal, "CodeInternal", "internal error, retry", KindInternal, 0},
	{CodeTooLong, "CodeTooLong", "JSON body too long", KindQuota, 0},

	{CodeMediaRefused, "CodeMediaRefused", "media: unknown type, or declared size over the limit", KindParameter, 0},
	{CodeMediaContent, "CodeMediaContent", "media: content not of the declared type, or over the limit", KindParameter, 0},
	{CodeMediaUnknown, "CodeMediaUnknown", "media: no such upload, someone else's, or expired", KindNotFound, 0},
	{CodeMediaNotUploaded, "CodeMediaNotUploaded", "media: commit before the object was uploaded", KindParameter, 0},
	{CodeMediaUnavailable, "CodeMediaUnavailable", "media: the object store cannot be reached", KindRetryLater, 0},
	{CodeMediaNoArchive, "CodeMediaNoArchive", "media: no archive for that hour", KindNotFound, 0},

	{CodeMuteParam, "CodeMuteParam", "setnospeaking/getnospeaking: bad JSON", KindParameter, 0},
	{CodeMuteNoAccount, "CodeMuteNoAccount", "Set_Account/Get_Account missing", KindParameter, 0},
	{CodeMuteBadAccount, "CodeMuteBadAccount", "Set_Account/Get_Account not a user", KindNotFound, 0},
	{CodeMuteNoTime, "CodeMuteNoTime", "neither mute time given", KindParameter, 0},
	{CodeMuteSystem, "CodeMuteSystem", "system error", KindInternal, 0},
}

var byCode = func() map[int]CodeInfo {
	m := make(map[int]CodeInfo, len(codeTable))
	for _, r := range codeTable {
		if _, dup := m[r.code]; dup {
			panic(fmt.Sprintf("command: error code %d listed twice", r.code))
		}
		ci := CodeInfo{Code: r.code, Name: r.name, What: r.what, Kind: r.kind, Reason: r.reason}
		if ci.Reason == 0 {
			ci.Reason = r.kind.reason()
		}
		m[r.code] = ci
	}
	return m
}()

// Lookup returns the table's row for code. The app's own before-send
// callback codes (120001–130000) are refusals: permission.
func Lookup(code int) CodeInfo {
	if ci, ok := byCode[code]; ok {
		return ci
	}
	if code >= CodeCallbackCustomFirst && code <= CodeCallbackCustomLast {
		return CodeInfo{Code: code, Name: "app callback code", Kind: KindPermission, Reason: KindPermission.reason()}
	}
	return CodeInfo{Code: code, Kind: KindUnknown, Reason: ReasonUnspecified}
}

// KindOf is the kind of a code.
func KindOf(code int) Kind { return Lookup(code).Kind }

// MQTTReason is the MQTT 5 PUBACK reason code of a request that failed
// with code.
func MQTTReason(code int) byte { return Lookup(code).Reason }

// Codes is the table, in code order.
func Codes() []CodeInfo {
	out := make([]CodeInfo, 0, len(byCode))
	for _, ci := range byCode {
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	return out
}

// reasonNames are the MQTT 5 names of the reasons above.
var reasonNames = map[byte]string{
	ReasonUnspecified:    "Unspecified error",
	ReasonImplementation: "Implementation specific error",
	ReasonNotAuthorized:  "Not authorized",
	ReasonQuotaExceeded:  "Quota exceeded",
	ReasonPayloadFormat:  "Payload format invalid",
}

// CodeTableMarkdown renders the table as docs/mqtt.md shows it (a test
// keeps the two equal).
func CodeTableMarkdown() string {
	var b strings.Builder
	b.WriteString("| ErrorCode | meaning | kind | MQTT 5 PUBACK reason |\n|---|---|---|---|\n")
	for _, ci := range Codes() {
		fmt.Fprintf(&b, "| %d | %s | %s | 0x%02X %s |\n", ci.Code, ci.What, ci.Kind, ci.Reason, reasonNames[ci.Reason])
	}
	fmt.Fprintf(&b, "| %d–%d | the app's own refusal (before-send callback) | %s | 0x%02X %s |\n",
		CodeCallbackCustomFirst, CodeCallbackCustomLast, KindPermission, KindPermission.reason(), reasonNames[KindPermission.reason()])
	fmt.Fprintf(&b, "| any other | — | unknown | 0x%02X %s |\n", ReasonUnspecified, reasonNames[ReasonUnspecified])
	return b.String()
}

// LogRefusal logs a refused request once, as one line: who (user, device),
// what (command) and the answer (ErrorCode, ErrorInfo, kind) — never the
// request's bytes, which may hold a private message. Refusals are at info,
// except the retry-later kind (rate limits, a shutdown), which comes in
// floods and tells nothing new per line: debug. A failure of the server
// itself was logged with its cause by Exec as well.
func LogRefusal(log *slog.Logger, c *Caller, name string, e *Error) {
	level := slog.LevelInfo
	k := KindOf(e.Code)
	if k == KindRetryLater {
		level = slog.LevelDebug
	}
	if !log.Enabled(context.Background(), level) {
		return
	}
	log.LogAttrs(context.Background(), level, "request refused",
		slog.String("user", clip(c.UserID)), slog.String("device", clip(c.Device)), slog.String("command", clip(name)),
		slog.Int("ErrorCode", e.Code), slog.String("ErrorInfo", clip(e.Info)), slog.String("kind", k.String()))
}

// clip bounds what a caller chose (a REST identifier, a command name, a
// value quoted in an ErrorInfo) so one request cannot write a huge line.
func clip(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}
