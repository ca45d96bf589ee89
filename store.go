package tether

import (
	"context"
	"time"
)

// Store is the durable state of the gateway: the logs of devices and
// groups, each device's cursors in them, group memberships and
// idempotency keys (see Cursor). Every backend (the
// embedded store, Redis) implements it and passes the conformance suite in
// package storetest.
//
// Rules every implementation keeps (SPEC section 2):
//   - Every method honours ctx: it returns ctx.Err() (wrapped) once the
//     deadline passes, including while waiting for a connection, a lock or a
//     commit. Callers always pass a deadline.
//   - Every method is one round trip to the backend (one transaction, one
//     pipeline or one script); no method holds a connection while acquiring
//     another.
//   - Errors: ErrNotFound (wrapped) for an unknown message or device, an
//     *Error with EInvalid for bad arguments, ErrUnavailable (wrapped) when
//     the backend cannot answer; anything else is internal.
type Store interface {
	// Publish appends each message to the log of its target (Entry.Seq
	// numbers it there) and records it in the expiry index: a fixed number
	// of writes per message, whatever the size of a target group. When
	// Publish returns nil every message is durable, and results[i] answers
	// msgs[i]. A group message is addressed to the members of the group at
	// the moment it is appended (Cursor.Spans).
	//
	// A message whose ClientID is set and equals that of a message already
	// accepted for the same target, which has not expired at its
	// PublishedAt, is not stored again: its result carries the original id,
	// position and recipient count and Duplicate is true. This holds within
	// one call too. A message whose ID is already stored for the same
	// target (a retried call) is answered as a duplicate of itself; for
	// another target it is an EInvalid error.
	Publish(ctx context.Context, msgs []*Message) ([]PublishResult, error)

	// Join records that device exists and is a member of groups (possibly
	// none): in each group it is not a member of, a span opens at the
	// group log's newest position. Idempotent.
	Join(ctx context.Context, device string, groups []string) error

	// Leave closes device's span in group: later messages of the group are
	// not addressed to it, earlier ones still are. Not a member: nil.
	Leave(ctx context.Context, group, device string) error

	// Cursors returns the cursors of each device: the cursor of its own
	// log first (Floor 0 when nothing is stored for it), then those of the
	// groups it is a member of or that still owe it messages, by group id.
	Cursors(ctx context.Context, devices []string) ([][]Cursor, error)

	// Read returns, for each request, up to Limit entries of the log of
	// its Source at positions above After, in order. Purged positions are
	// missing, and so may be those of a device's own log that its
	// cursor's Floor passed (nothing reads them again); expired messages
	// are returned (the caller skips them).
	Read(ctx context.Context, reqs []ReadRequest) ([][]Entry, error)

	// Commit applies each change to its device's cursors with ApplyMarks
	// (after finding the positions of its AckIDs) and stores the cursors
	// and their history. It returns, for each change, what it changed and
	// the device's cursors after it.
	Commit(ctx context.Context, changes []Change) ([]Committed, error)

	// Expire settles as expired, for every device it is addressed to and
	// has not settled, each message that expired at or before now, and
	// purges messages that expired before purgeBefore with what only they
	// needed (idempotency keys, history, membership spans). It handles at
	// most limit messages per call and returns how many deliveries became
	// expired and whether more work remains.
	Expire(ctx context.Context, now, purgeBefore time.Time, limit int) (expired int, more bool, err error)

	// Cancel settles message id as cancelled for every device it is
	// addressed to and has not settled (SPEC section 3, Cancel), appending
	// a delivery.cancelled event for each in the same transaction. sent
	// gives, by device, the sends the caller knows of that the store may
	// not (first sends are recorded lazily); a larger count than the
	// store's is the one recorded and reported. It returns those devices
	// (sorted): their sessions must stop sending it. ErrNotFound for an
	// unknown id.
	Cancel(ctx context.Context, id string, at time.Time, sent map[string]int) ([]string, error)

	// Message returns a message with the state of each of its deliveries.
	Message(ctx context.Context, id string) (MessageStatus, error)

	// Device returns what the store knows of a device (groups, pending
	// count; Presence is left zero). ErrNotFound when the device never
	// joined and no message was ever addressed to it alone.
	Device(ctx context.Context, id string) (DeviceInfo, error)

	// Group returns the members of a group (Online left false). A group
	// without members has an empty list; it is not an error.
	Group(ctx context.Context, id string) (GroupInfo, error)

	// Ping checks that the store answers.
	Ping(ctx context.Context) error

	// EventStore is the store's event log: Commit, Expire and Cancel
	// append the delivery events of what they settle (Outcome.Settled) in
	// the same transaction or script.
	EventStore

	// Close releases the store. It is idempotent; later calls of other
	// methods return an error wrapping ErrClosed.
	Close() error
}

// ReadRequest asks Store.Read for entries of one log.
type ReadRequest struct {
	Source Target
	After  uint64
	Limit  int
}

// Change is what one device's sessions did to its cursors since the last
// commit: sends recorded and settlements, in Marks, and acks of message
// ids the caller could not place in a log. A mark names a position the
// caller read from the log (Store.Read): the store does not check that it
// exists.
type Change struct {
	Device string
	At     time.Time
	Marks  []Mark
	// AckIDs are message ids acked by the device whose log and position
	// the caller does not know; the store looks for them in the device's
	// logs. Ids it does not find are ignored.
	AckIDs []string
}

// Committed is what Store.Commit answers for one Change.
type Committed struct {
	Outcome
	Cursors []Cursor
}
