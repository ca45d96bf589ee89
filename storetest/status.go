package storetest

import (
	"errors"
	"slices"
	"time"

	"github.com/tetherpush/tether"
)

func (e *env) message(id string) tether.MessageStatus {
	e.t.Helper()
	st, err := e.s.Message(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Message(%s): %v", id, err)
	}
	return st
}

// checkNotFound checks that message id is unknown.
func (e *env) checkNotFound(id string) {
	e.t.Helper()
	if _, err := e.s.Message(e.ctx, id); !errors.Is(err, tether.ErrNotFound) {
		e.t.Errorf("Message(%s) error = %v, want ErrNotFound", id, err)
	}
}

// want is one expected delivery of a MessageStatus.
type want struct {
	device   string
	state    tether.DeliveryState
	attempts int
	ackedAt  time.Time
}

// checkDeliveries checks the deliveries of message id, in order.
func (e *env) checkDeliveries(id string, wants ...want) {
	e.t.Helper()
	st := e.message(id)
	if len(st.Deliveries) != len(wants) {
		e.t.Errorf("Message(%s) has %d deliveries %+v, want %d", id, len(st.Deliveries), st.Deliveries, len(wants))
		return
	}
	for i, w := range wants {
		d := st.Deliveries[i]
		if d.Device != w.device || d.State != w.state || d.Attempts != w.attempts || !d.AckedAt.Equal(w.ackedAt) {
			e.t.Errorf("Message(%s) delivery %d = {%s %s attempts %d acked %v}, want {%s %s attempts %d acked %v}",
				id, i, d.Device, d.State, d.Attempts, d.AckedAt, w.device, w.state, w.attempts, w.ackedAt)
		}
		if d.Message != nil {
			e.t.Errorf("Message(%s) delivery %d carries a Message; want nil in MessageStatus", id, i)
		}
	}
}

func (e *env) device(id string) tether.DeviceInfo {
	e.t.Helper()
	info, err := e.s.Device(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Device(%s): %v", id, err)
	}
	if info.ID != id {
		e.t.Errorf("Device(%s).ID = %q", id, info.ID)
	}
	return info
}

func (e *env) checkDevice(id string, pending int, groups ...string) {
	e.t.Helper()
	info := e.device(id)
	if groups == nil {
		groups = []string{}
	}
	if !slices.Equal(info.Groups, groups) {
		e.t.Errorf("Device(%s).Groups = %q, want %q", id, info.Groups, groups)
	}
	if info.Pending != pending {
		e.t.Errorf("Device(%s).Pending = %d, want %d", id, info.Pending, pending)
	}
	if info.Presence != (tether.Presence{}) {
		e.t.Errorf("Device(%s).Presence = %+v, want zero (the store does not know presence)", id, info.Presence)
	}
}

func (e *env) checkGroup(id string, members ...string) {
	e.t.Helper()
	info, err := e.s.Group(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Group(%s): %v", id, err)
	}
	if info.ID != id {
		e.t.Errorf("Group(%s).ID = %q", id, info.ID)
	}
	var got []string
	for _, m := range info.Devices {
		got = append(got, m.ID)
		if m.Online {
			e.t.Errorf("Group(%s) member %s Online = true, want false (the store does not know presence)", id, m.ID)
		}
	}
	if !slices.Equal(got, members) {
		e.t.Errorf("Group(%s) members = %q, want %q", id, got, members)
	}
}
