package tether

import (
	"context"
	"time"
)

// Store is the durable state of the gateway: messages, per-device
// deliveries, group memberships and idempotency keys. Every backend (the
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
	// Publish durably stores msgs and, for each, one pending delivery per
	// addressed device: the device of a device target, or the members of a
	// group at this moment. When Publish returns nil every message is
	// durable, and results[i] answers msgs[i].
	//
	// A message whose ClientID is set and equals that of a message already
	// accepted for the same target, which has not expired at its
	// PublishedAt, is not stored again: its result carries the original id
	// and recipient count and Duplicate is true. This holds within one call
	// too.
	Publish(ctx context.Context, msgs []*Message) ([]PublishResult, error)

	// Join records that device exists and is a member of groups (possibly
	// none). Idempotent.
	Join(ctx context.Context, device string, groups []string) error

	// Leave removes device from group. Not a member: nil.
	Leave(ctx context.Context, group, device string) error

	// Pending returns up to limit deliveries of device, in message id order,
	// whose message id is greater than after ("" for all), whose state is
	// pending or inflight and whose message has not expired at now. Each
	// carries its Message.
	Pending(ctx context.Context, device, after string, limit int, now time.Time) ([]Delivery, error)

	// Sent records one more attempt for each of device's deliveries ids and
	// sets their state to inflight. It returns the attempt number now
	// recorded for each id, or 0 for an id that is unknown, acked, expired or
	// dead (such an id must not be sent).
	Sent(ctx context.Context, device string, ids []string) ([]int, error)

	// Ack marks device's deliveries ids acked at now. Unknown ids and
	// deliveries already acked, expired or dead are ignored. It returns how
	// many deliveries became acked.
	Ack(ctx context.Context, device string, ids []string, now time.Time) (int, error)

	// Kill marks device's deliveries ids dead: sent the maximum number of
	// times without an ack. They are kept for inspection until their message
	// expires and never returned by Pending again. It returns how many became
	// dead.
	Kill(ctx context.Context, device string, ids []string) (int, error)

	// Expire marks expired every pending or inflight delivery whose message
	// expired at or before now, and deletes messages, with their deliveries
	// and idempotency keys, that expired before purgeBefore. It handles at
	// most limit messages per call and returns how many deliveries became
	// expired and whether more work remains.
	Expire(ctx context.Context, now, purgeBefore time.Time, limit int) (expired int, more bool, err error)

	// Message returns a message with the state of each of its deliveries.
	Message(ctx context.Context, id string) (MessageStatus, error)

	// Device returns what the store knows of a device (groups, pending
	// count; Presence is left zero). ErrNotFound when the device never
	// joined and has no deliveries.
	Device(ctx context.Context, id string) (DeviceInfo, error)

	// Group returns the members of a group (Online left false). A group
	// without members has an empty list; it is not an error.
	Group(ctx context.Context, id string) (GroupInfo, error)

	// Ping checks that the store answers.
	Ping(ctx context.Context) error

	// Close releases the store. It is idempotent; later calls of other
	// methods return an error wrapping ErrClosed.
	Close() error
}
