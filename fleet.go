package tether

import (
	"context"
	"time"
)

// Fleet is what the nodes of one service share besides the Store: who is
// connected where, and events routed from node to node. A single node on
// the embedded store has no Fleet: its hub knows everything locally.
//
// Presence is kept so that it costs one write per node per heartbeat, not
// one per device: a device's entry names its node and session and is written
// when the session opens or closes; the node's own liveness key is refreshed
// every heartbeat with a time to live. A device is online when its entry
// names a node that is alive, so the devices of a crashed node show offline
// once its liveness key expires.
//
// Every method honours ctx (deadline included while waiting for a
// connection) and is one round trip or one pipeline.
type Fleet interface {
	// Alive refreshes node's liveness for ttl.
	Alive(ctx context.Context, node string, ttl time.Duration) error

	// Connected records sessions opened on their nodes and returns, for
	// each, the presence it replaced (Node "" when none), so that the
	// caller can send a takeover to the previous node.
	Connected(ctx context.Context, sessions []Online) ([]Online, error)

	// Disconnected removes the entries of sessions that are still the
	// current ones of their devices (matched by Session), and records
	// their last_seen.
	Disconnected(ctx context.Context, sessions []Online) error

	// Lookup returns the presence of each device: Node "" when it has no
	// entry or its node is not alive.
	Lookup(ctx context.Context, devices []string) ([]Online, error)

	// Send delivers events to the nodes they name; an event whose Node is
	// "" goes to every node.
	Send(ctx context.Context, events []Event) error

	// Listen receives node's events and calls fn for each, in order, until
	// ctx ends or the subscription fails; it returns why. It calls ready
	// once the subscription is in place. The caller listens again after a
	// failure.
	Listen(ctx context.Context, node string, ready func(), fn func(Event)) error
}

// Online is one device's session as presence records it.
type Online struct {
	Device      string
	Node        string
	Session     string // unique per session, to tell a takeover from a stale close
	ConnectedAt time.Time
	LastSeen    time.Time
}

// EventKind says what an Event asks of the node that receives it.
type EventKind string

// Event kinds.
const (
	// EventWake: the log of Device has new entries.
	EventWake EventKind = "wake"
	// EventLog: the log of Group has entries up to Seq; sent to every node.
	EventLog EventKind = "log"
	// EventReread: the log of Group may hold entries no EventLog announced
	// (a publish that failed after the store had kept its message); the
	// nodes that read it read it to its end. Sent to every node; a node
	// that does not know the kind ignores it.
	EventReread EventKind = "reread"
	// EventMembership: Device joined or left a group; its session loads
	// its cursors again.
	EventMembership EventKind = "membership"
	// EventTakeover: Device connected elsewhere with Session; close any
	// other session of it here with 4409.
	EventTakeover EventKind = "takeover"
	// EventProbe: sent by a node to itself to prove its subscription hears.
	EventProbe EventKind = "probe"
)

// Event is a message from one node to another.
type Event struct {
	Node    string // the node it is for; "" for every node
	Kind    EventKind
	Device  string
	Group   string
	Seq     uint64
	Session string
}
