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
// In cluster mode (cluster.go, docs/cluster.md) the transports call the
// router (internal/cluster/forward.go) instead of the command layer: on
// the node that owns the data it is step 2 as above, elsewhere the command
// is forwarded to that node. Step 3 appends the group to the partition's
// replicated log (store/log.go) instead of syncing Pebble, and answers
// once a quorum holds it; every other node applies the log entry to its
// own store and calls OnCommit from there, so step 4 runs on every node for
// the devices connected to it (the pusher only on the owner).
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
// In cluster mode the NATS node starts first (step 0), the store opens as
// a view of the log, and Start joins the cluster — waits until the view
// has applied the log as it was, and devices' cursors can be read —
// before anything else.
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
// media (then its embedded S3 gateway), in cluster mode the cluster (its
// leases released, so another node takes over at once), the store, the
// NATS node, and finally the
// data directory's lock so that another process may take it.
package server
