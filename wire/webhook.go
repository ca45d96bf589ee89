package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the HTTP header of a webhook request that carries its
// signature (SPEC section 11):
//
//	Tether-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">
//
// The HMAC is keyed with the webhook secret (--webhook-secret). A header
// may carry several v1= values, one per secret, while a secret is rotated.
const SignatureHeader = "Tether-Signature"

// DefaultWebhookTolerance is how far a signature's timestamp may be from
// the receiver's clock, in either direction, before VerifyWebhook refuses
// it as a replay. The sender signs every attempt afresh, so retries of an
// old batch carry a current timestamp.
const DefaultWebhookTolerance = 5 * time.Minute

// Errors of VerifyWebhook. Each is wrapped with the detail of what was
// wrong; test with errors.Is.
var (
	// ErrSignatureMissing: the header is empty.
	ErrSignatureMissing = errors.New("webhook signature missing")
	// ErrSignatureMalformed: the header is not t=<unix seconds>,v1=<hex>…
	ErrSignatureMalformed = errors.New("webhook signature malformed")
	// ErrSignatureMismatch: no v1 value is the HMAC of the body with the
	// secret (wrong secret, or a body changed on the way).
	ErrSignatureMismatch = errors.New("webhook signature mismatch")
	// ErrSignatureExpired: the signature is valid but its timestamp is
	// further from now than the tolerance (a replay, or a clock off).
	ErrSignatureExpired = errors.New("webhook signature timestamp outside tolerance")
	// ErrNoSecret: the secret given to VerifyWebhook is empty.
	ErrNoSecret = errors.New("webhook secret is empty")
)

// maxSignatureHeader bounds the header VerifyWebhook parses: room for a
// timestamp and a few dozen v1 values.
const maxSignatureHeader = 4096

// SignWebhook returns the value of the Tether-Signature header for body
// sent at t: "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">" keyed
// with secret.
func SignWebhook(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(webhookMAC(secret, ts, body))
}

// webhookMAC is the HMAC-SHA256 of "<ts>.<body>" keyed with secret.
func webhookMAC(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// VerifyWebhook checks header, the Tether-Signature of a webhook request
// with body, against secret: one of its v1 values must be the HMAC of
// "<t>.<body>" (compared in constant time), and t must be within tolerance
// of now in either direction (tolerance ≤ 0: DefaultWebhookTolerance). A
// receiver rotating its secret calls it once per secret it accepts. It
// returns nil, or an error wrapping exactly one of ErrNoSecret,
// ErrSignatureMissing, ErrSignatureMalformed, ErrSignatureMismatch and
// ErrSignatureExpired. Pass the body exactly as received: re-encoded JSON
// does not verify.
func VerifyWebhook(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if len(secret) == 0 {
		return ErrNoSecret
	}
	ts, sigs, err := parseSignature(header)
	if err != nil {
		return err
	}
	want := webhookMAC(secret, ts, body)
	ok := false
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			ok = true
		}
	}
	if !ok {
		return fmt.Errorf("%w: none of %d v1 values matches the body and secret", ErrSignatureMismatch, len(sigs))
	}
	if tolerance <= 0 {
		tolerance = DefaultWebhookTolerance
	}
	t, _ := strconv.ParseInt(ts, 10, 64) // validTimestamp checked it
	age := now.Sub(time.Unix(t, 0))
	if age > tolerance || age < -tolerance {
		return fmt.Errorf("%w: signed at %d, %v from now, tolerance %v", ErrSignatureExpired, t, age.Truncate(time.Second), tolerance)
	}
	return nil
}

// parseSignature splits a Tether-Signature header into its timestamp, as
// written, and its decoded v1 values. Items other than t and v1 (a future
// scheme) are ignored; spaces around items are allowed.
func parseSignature(header string) (ts string, sigs [][]byte, err error) {
	if strings.TrimSpace(header) == "" {
		return "", nil, ErrSignatureMissing
	}
	if len(header) > maxSignatureHeader {
		return "", nil, fmt.Errorf("%w: header of %d bytes, at most %d", ErrSignatureMalformed, len(header), maxSignatureHeader)
	}
	for item := range strings.SplitSeq(header, ",") {
		k, v, found := strings.Cut(strings.TrimSpace(item), "=")
		if !found {
			return "", nil, fmt.Errorf("%w: item %q is not key=value", ErrSignatureMalformed, item)
		}
		switch k {
		case "t":
			if ts != "" {
				return "", nil, fmt.Errorf("%w: more than one t=", ErrSignatureMalformed)
			}
			if !validTimestamp(v) {
				return "", nil, fmt.Errorf("%w: t=%q is not unix seconds", ErrSignatureMalformed, v)
			}
			ts = v
		case "v1":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return "", nil, fmt.Errorf("%w: v1=%q is not %d hex digits", ErrSignatureMalformed, v, 2*sha256.Size)
			}
			sigs = append(sigs, sig)
		}
	}
	switch {
	case ts == "":
		return "", nil, fmt.Errorf("%w: no t=", ErrSignatureMalformed)
	case len(sigs) == 0:
		return "", nil, fmt.Errorf("%w: no v1=", ErrSignatureMalformed)
	}
	return ts, sigs, nil
}

// validTimestamp reports whether s is unix seconds as SignWebhook writes
// them: a decimal int64 in its canonical form (no sign but a minus, no
// leading zero).
func validTimestamp(s string) bool {
	n, err := strconv.ParseInt(s, 10, 64)
	return err == nil && strconv.FormatInt(n, 10) == s
}
