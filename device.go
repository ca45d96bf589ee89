package tether

import "time"

// DeviceInfo answers GET /v1/devices/{id}: what the store knows of a device
// merged with presence.
type DeviceInfo struct {
	ID      string
	Groups  []string // sorted
	Pending int      // deliveries not yet acked, expired or dead
	Presence
}

// Presence says whether and where a device is connected.
type Presence struct {
	Online      bool
	Node        string
	ConnectedAt time.Time
	LastSeen    time.Time
}

// GroupInfo answers GET /v1/groups/{id}.
type GroupInfo struct {
	ID      string
	Devices []GroupMember // sorted by id
}

// GroupMember is one device of a group with its presence.
type GroupMember struct {
	ID     string
	Online bool
}
