package client

import (
	"math/rand/v2"
	"time"
)

// backoff computes reconnect delays with full jitter: the n-th delay in a row
// is uniform in [0, min(max, min·2ⁿ)), so a fleet dropped at once spreads its
// reconnects over the whole window instead of arriving in waves.
type backoff struct {
	min, max time.Duration
	n        int
}

// next returns the delay before the next attempt and counts the attempt.
func (b *backoff) next() time.Duration {
	ceil := b.min
	for i := 0; i < b.n && ceil < b.max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, b.max)
	b.n++
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil)
}

// reset starts over from min, after a session that lasted.
func (b *backoff) reset() { b.n = 0 }
