// Package sdk is Duet's Go client SDK: one device of one user, speaking the
// MQTT contract (PROTOCOL.md) to a Duet server and keeping a local store.
//
// Login connects with client id {UserID}:{DeviceID}, subscribes to
// im/{me}/# at QoS 1 and returns. The server then replays what this device
// has not received; the SDK applies each timeline event to the local store
// (a bbolt file under Options.Dir) and only then acknowledges it, so the
// server's cursor for the device never passes what the device holds. The
// app hears, in this order: OnConnectionChanged, the offline messages
// (OnNewMessage each), the conversation list (OnRecentContactsChanged),
// OnRefresh — at login and after each reconnect alike.
//
// Listeners run on one goroutine, one at a time and in event order, never
// before Login returned and never after Logout returned. Listeners that use
// the client are set with SetListeners once Login returned it.
//
// Reliability:
//
//   - Delivery to the app is at least once: an event is kept in the local
//     store until its listener returned, and delivered again at the next
//     Login if it did not (Logout first, or a crash). An app that must act
//     once makes its action idempotent by MsgKey or Seq; an answer sent
//     with Outgoing.ID = "re:"+MsgKey is sent once.
//   - Sends go through an outbox in the local store: written first with
//     their MsgRandom and MsgSeq, resent after a timeout, a reconnect or a
//     restart until the server answers (it stores a resend once), with a
//     status (SendStatus, Outbox, OnSendStatus). A refusal fails the send at
//     once with the server's code (*Error).
//   - Timeline events carry a gap-free Seq. The last applied Seq is kept in
//     the local store; duplicates (Seq at or below it, or a MsgKey already
//     applied) are dropped; a gap (an event above last+1, or a
//     sync_complete whose LastSeq is above it) is filled with openim/sync
//     {FromSeq: last} while later events wait.
//   - A lost connection is re-established with exponential backoff and
//     jitter (Options.MinBackoff..MaxBackoff); the replay resumes from the
//     server's cursor and ends with another OnRefresh. A connection taken
//     over by another client with the same DeviceID ends the login with
//     OnReplaced instead.
//   - Options.Addrs lists more addresses of the service (a cluster's
//     nodes): a lost connection, an unreachable node or one that answers
//     "server unavailable" moves the next attempt to the next address,
//     round-robin, with the backoff between rounds over the list; the
//     session resumes there from the device's cursor as after any
//     reconnect.
//   - Login with the server unreachable starts offline from a store used
//     before, connecting in the background.
//
// History (GetMessage) is read from the local store. The store remembers
// which spans of each conversation it knows to be complete; spans it cannot
// vouch for are pulled from the server (openim/getmsg) and then remembered.
// A message seen live is stored but proves nothing about what came before
// it.
//
// Media (SendImage, SendSound, SendFile, SendVideo, Download) go straight
// between the device and the object store with presigned URLs (see
// docs/media.md). Profile, friend, blacklist and push-token commands have
// typed calls; anything else goes through Request. Options.TLS connects to
// the server's TLS listener, a ws:// or wss:// Addr to its WebSocket
// listener; Options.RefreshUserSig lets a long session reconnect after its
// first UserSig expired.
//
// Errors the server returns are *Error values carrying Tencent's codes; a
// refused login is a *RefusedError; calls after Logout return ErrClosed.
package sdk
