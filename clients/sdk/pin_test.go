package sdk

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestPinConversation: a pin made on one device is in that device's list
// at once, reaches my other device (recentcontact_top on the timeline), and
// comes from the server to a device that logs in later; pinned
// conversations list first.
func TestPinConversation(t *testing.T) {
	s := startServer(t)
	s.need(t, "recentcontact/top")
	s.users("alice", "bob", "carol", "dave")
	ctx := ctxT(t)
	phone := s.login(t, "alice", "phone", "", MQTT5)
	laptop := s.login(t, "alice", "laptop", "", MQTT311)
	phone.rec.waitRefreshes(1)
	laptop.rec.waitRefreshes(1)
	b := s.login(t, "bob", "phone", "", MQTT5)
	c := s.login(t, "carol", "phone", "", MQTT5)
	if _, err := b.SendText(ctx, "alice", "from bob"); err != nil {
		t.Fatal(err)
	}
	s.advance(time.Second) // carol's message is the newer
	if _, err := c.SendText(ctx, "alice", "from carol"); err != nil {
		t.Fatal(err)
	}
	phone.rec.waitMsgs(2)
	laptop.rec.waitMsgs(2)

	// order is the list as "peer:TopFlag", in order.
	order := func(d *device) string {
		cs, err := d.GetRecentContacts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s := ""
		for _, c := range cs {
			s += fmt.Sprintf("%s:%d ", c.Peer, c.TopFlag)
			if c.Pinned() != (c.TopFlag == 1) {
				t.Fatalf("Pinned() %v with TopFlag %d", c.Pinned(), c.TopFlag)
			}
		}
		return s
	}
	waitOrder := func(d *device, want string) {
		t.Helper()
		checkFor(t, 15*time.Second, func() error {
			if got := order(d); got != want {
				return fmt.Errorf("list %q, want %q", got, want)
			}
			return nil
		})
	}
	if got := order(phone); got != "carol:0 bob:0 " {
		t.Fatalf("before pin: %q", got)
	}
	if err := phone.PinConversation(ctx, "bob", true); err != nil {
		t.Fatal(err)
	}
	if got := order(phone); got != "bob:1 carol:0 " {
		t.Fatalf("the pinning device's list right after PinConversation: %q", got)
	}
	waitOrder(laptop, "bob:1 carol:0 ")
	checkFor(t, 15*time.Second, func() error {
		if ct, ok := laptop.rec.contact("bob"); !ok || ct.TopFlag != 1 {
			return fmt.Errorf("OnRecentContactsChanged reported bob as %+v", ct)
		}
		return nil
	})

	// A device that logs in later gets the pin from the server.
	tablet := s.login(t, "alice", "tablet", "", MQTT5)
	tablet.rec.waitRefreshes(1)
	if got := order(tablet); got != "bob:1 carol:0 " {
		t.Fatalf("a new device's list: %q", got)
	}

	// No conversation with dave: the server refuses the pin.
	var e *Error
	if err := phone.PinConversation(ctx, "dave", true); !errors.As(err, &e) || e.Code != 50002 {
		t.Fatalf("pin without a conversation: %v, want a 50002 *Error", err)
	}

	if err := laptop.PinConversation(ctx, "bob", false); err != nil {
		t.Fatal(err)
	}
	waitOrder(phone, "carol:0 bob:0 ")
	waitOrder(tablet, "carol:0 bob:0 ")
}
