package wire_test

import (
	"testing"

	"github.com/tetherpush/tether/wire"
)

// closeCodes are the close codes of SPEC section 5, each with its reason and
// whether a client reconnects after it.
var closeCodes = []struct {
	code      int
	reason    string
	retryable bool
}{
	{wire.CloseNormal, "normal closure", true},
	{wire.CloseGoingAway, "server shutting down", true},
	{wire.CloseUnsupported, "binary frames are not supported", false},
	{wire.CloseInvalidPayload, "frame is not a JSON object", false},
	{wire.ClosePolicyViolation, "policy violation", true},
	{wire.CloseTooBig, "frame too large", false},
	{wire.CloseInternal, "internal error", true},
	{wire.CloseTokenExpired, "token expired", true},
	{wire.CloseHeartbeat, "heartbeat timeout", true},
	{wire.CloseReplaced, "replaced by a newer connection", false},
	{wire.CloseRateLimited, "rate limited", true},
	{wire.CloseSlowConsumer, "slow consumer", true},
}

func TestCloseCodeValues(t *testing.T) {
	// The numbers are public (SPEC section 5): other programs match on them.
	want := []int{1000, 1001, 1003, 1007, 1008, 1009, 1011, 4401, 4408, 4409, 4429, 4503}
	if len(closeCodes) != len(want) {
		t.Fatalf("%d close codes under test, want %d", len(closeCodes), len(want))
	}
	for i, cc := range closeCodes {
		if cc.code != want[i] {
			t.Errorf("close code %d = %d, want %d", i, cc.code, want[i])
		}
	}
}

func TestCloseReason(t *testing.T) {
	seen := map[string]int{}
	for _, cc := range closeCodes {
		got := wire.CloseReason(cc.code)
		if got != cc.reason {
			t.Errorf("CloseReason(%d) = %q, want %q", cc.code, got, cc.reason)
		}
		if len(got) > 123 {
			t.Errorf("CloseReason(%d) is %d bytes; a close frame holds 123", cc.code, len(got))
		}
		if other, ok := seen[got]; ok {
			t.Errorf("CloseReason(%d) = CloseReason(%d) = %q, want distinct reasons", cc.code, other, got)
		}
		seen[got] = cc.code
	}
	for _, code := range []int{0, 1002, 1005, 1006, 1010, 3000, 4000, 4410, 65535, -1} {
		if got := wire.CloseReason(code); got != "" {
			t.Errorf("CloseReason(%d) = %q, want \"\" for a code protocol v1 does not send", code, got)
		}
	}
}

func TestRetryable(t *testing.T) {
	for _, cc := range closeCodes {
		if got := wire.Retryable(cc.code); got != cc.retryable {
			t.Errorf("Retryable(%d) = %v, want %v", cc.code, got, cc.retryable)
		}
	}
	// Codes from a proxy or a newer server, and "no status" / "abnormal".
	for _, code := range []int{1002, 1005, 1006, 1012, 1013, 4000, 4999} {
		if !wire.Retryable(code) {
			t.Errorf("Retryable(%d) = false, want true for a code protocol v1 does not define", code)
		}
	}
}

func TestRetryableStatus(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   bool
	}{
		{401, false}, // token missing, invalid or expired
		{403, false}, // origin refused
		{429, true},
		{503, true}, // --max-connections, draining
		{500, true},
		{502, true},
		{504, true},
		{599, true},
		{400, true}, // a proxy's; the gateway's upgrader answers 400 to a broken handshake only
		{404, true}, // a proxy's during a deploy
		{408, true},
		{200, true},
		{0, true},
	} {
		if got := wire.RetryableStatus(tc.status); got != tc.want {
			t.Errorf("RetryableStatus(%d) = %v, want %v", tc.status, got, tc.want)
		}
	}
}
