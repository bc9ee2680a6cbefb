// Package server assembles a Duet: the one place where the store, the
// command layer, offline push, media, the MQTT broker (with delivery) and
// the HTTP listener are built and tied together. Package main maps its
// flags, environment and YAML file onto Config; the test harnesses of
// broker/ and clients/sdk/ fill Config directly, so every test runs the
// server main runs.
//
// # The message path
//
// A message sent by a device or an app back-end goes:
//
//  1. transport: MQTT PUBLISH on im/{me}/req/openim/sendmsg (broker/, whose
//     hooks.Requests hand it to the command layer), or REST
//     POST /v4/openim/sendmsg (rest/, on the HTTP listener, http.go);
//  2. command layer: command.Service.Exec runs the handler (command/sendmsg.go),
//     which checks it and writes it to the store;
//  3. store: the group commit syncs it (store/) and only then answers the
//     sender (PUBACK / ActionStatus OK), and calls Options.OnCommit;
//  4. delivery: OnCommit is commitSinks (server.go), which hands the commit
//     to broker.Devices.Committed (the recipient's online devices get it on
//     im/{user}/in) and then to push.Pusher.Committed (offline devices get
//     a notification after the grace period).
//
// # Start order (New, then Start)
//
// New builds, Start lets work in:
//
//  1. the data directory's lock, then the secret (generated inside the
//     locked directory, so two processes never race to write it);
//  2. the store, opened with commitSinks as OnCommit and no sink yet: the
//     store must exist before the parts that read it;
//  3. the callback workers (internal/callback), then the command layer
//     over the store, given them;
//  4. the broker, which binds its listeners (a busy port fails before
//     anything slow starts) and creates delivery (Devices);
//  5. the pusher, given the devices (it skips online ones); its commands
//     are registered on the command layer, and a recall withdraws a
//     pending notification;
//  6. media (registers itself as the command layer's media checker; the
//     embedded S3 gateway is a child process);
//  7. the one real cycle, tied in one place (command.Service.Connect):
//     the command layer needs the broker's devices (live delivery, kick,
//     presence); then the commit sinks are attached, delivery first, then
//     the pusher;
//  8. the REST handler over the command layer.
//
// Start then starts the pusher's workers, the MQTT listeners, the web chat
// handler (it names the bound WebSocket address) and the HTTP listener:
// nothing reaches the command layer before everything it calls is tied.
//
// # Close order
//
// Close undoes it from the outside in: the HTTP listener (no new REST call),
// the broker (no new MQTT request; devices detach and flush their cursors),
// the callback workers, the pusher (before the store: its queue is in it),
// media (then its embedded S3 gateway), the store last, and finally the
// data directory's lock so that another process may take it.
package server
