package broker

import (
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/duet-im/duet/hooks"
)

// kickedEvent tells a device why it is about to be disconnected.
var kickedEvent = []byte(`{"Event":"kicked"}`)

// Kick disconnects every device of user (`im_open_login_svc/kick`,
// `account_delete`). Each device first gets {"Event":"kicked"} on
// im/{user}/in at QoS 0 — a notice, not a timeline event: it has no Seq and
// is not stored, so a device offline at the time misses it and learns of
// the kick from its refused login instead. MQTT 5 devices then get a
// DISCONNECT with reason 0x98 (administrative action); 3.1.1 devices see
// the connection closed.
//
// Kick does not stop the user from logging in again: the caller records
// the kick time first, and the Auth hook refuses UserSigs issued before it.
func (ds *Devices) Kick(user string) {
	ds.mu.RLock()
	devs := make([]*Device, 0, len(ds.users[user]))
	for _, dev := range ds.users[user] {
		devs = append(devs, dev)
	}
	ds.mu.RUnlock()
	for _, dev := range devs {
		// WritePacket serialises with the pump's writes.
		_ = dev.write("im/"+user+"/in", 0, 0, kickedEvent)
		if dev.cl.Properties.ProtocolVersion == 5 {
			_ = hooks.Write(dev.cl, packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Disconnect},
				ReasonCode:  packets.ErrAdministrativeAction.Code,
				Properties:  packets.Properties{ReasonString: "kicked by the app's admin"},
			})
		}
		dev.cl.Stop(packets.ErrAdministrativeAction)
	}
}
