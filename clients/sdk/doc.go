// Package sdk is Duet's Go client SDK: one device of one user, speaking the
// MQTT contract (PROTOCOL.md) to a Duet server and keeping a local store.
//
// Login connects with client id {UserID}:{DeviceID}, subscribes to
// im/{me}/# at QoS 1 and returns. The server then replays what this device
// has not received; the SDK applies each timeline event to the local store
// (a bbolt file under Options.Dir) and only then acknowledges it, so the
// server's cursor for the device never passes what the device holds. The
// app hears, in this order: the offline messages (OnNewMessage each), the
// conversation list (OnRecentContactsChanged), OnRefresh.
//
// Listeners run on one goroutine, one at a time and in event order.
//
// Reliability:
//
//   - Timeline events carry a gap-free Seq. The last applied Seq is kept in
//     the local store; duplicates (Seq at or below it, or a MsgKey already
//     applied) are dropped; a gap (an event above last+1, or a
//     sync_complete whose LastSeq is above it) is filled with openim/sync
//     {FromSeq: last} while later events wait.
//   - A lost connection is re-established with exponential backoff and
//     jitter (Options.MinBackoff..MaxBackoff); the replay resumes from the
//     server's cursor and ends with another OnRefresh.
//   - Requests that are safe to repeat are sent again after a timeout or a
//     reconnect. SendMessage keeps its MsgRandom and MsgSeq, which the
//     server recognises for 24 h, so a message is stored once.
//
// History (GetMessage) is read from the local store. The store remembers
// which spans of each conversation it knows to be complete; spans it cannot
// vouch for are pulled from the server (openim/getmsg) and then remembered.
// A message seen live is stored but proves nothing about what came before
// it.
//
// Commands the SDK does not wrap (sns/*, profile/*, push/set_token) go
// through Request. Options.TLS connects to the server's TLS listener;
// Options.RefreshUserSig lets a long session reconnect after its first
// UserSig expired.
//
// Errors the server returns are *Error values carrying Tencent's codes; a
// refused login is a *RefusedError.
package sdk
