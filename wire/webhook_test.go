package wire_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether/wire"
)

var (
	hookSecret = []byte("whsec-test-secret")
	hookBody   = []byte(`{"events":[{"id":"1","type":"device.online","at":"2026-11-24T10:00:00.123Z","device":"pos-1","node":"n1"}]}`)
	hookTime   = time.Unix(1795514400, 0)
)

// mac is the reference signature, computed here independently.
func mac(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts + "." + string(body)))
	return hex.EncodeToString(m.Sum(nil))
}

func TestSignWebhook(t *testing.T) {
	got := wire.SignWebhook(hookSecret, hookTime.Add(999*time.Millisecond), hookBody)
	want := "t=1795514400,v1=" + mac(hookSecret, "1795514400", hookBody)
	if got != want {
		t.Errorf("SignWebhook = %q, want %q", got, want)
	}
}

func TestVerifyWebhook(t *testing.T) {
	ts := strconv.FormatInt(hookTime.Unix(), 10)
	good := mac(hookSecret, ts, hookBody)
	other := mac([]byte("old-secret"), ts, hookBody)
	tests := []struct {
		name   string
		secret []byte
		header string
		body   []byte
		now    time.Time
		tol    time.Duration
		want   error // nil, or the sentinel wrapped
	}{
		{"signed", hookSecret, wire.SignWebhook(hookSecret, hookTime, hookBody), hookBody, hookTime, 0, nil},
		{"spaces", hookSecret, " t=" + ts + " , v1=" + good + " ", hookBody, hookTime, 0, nil},
		{"v1 first", hookSecret, "v1=" + good + ",t=" + ts, hookBody, hookTime, 0, nil},
		{"rotation old then new", hookSecret, "t=" + ts + ",v1=" + other + ",v1=" + good, hookBody, hookTime, 0, nil},
		{"rotation new then old", hookSecret, "t=" + ts + ",v1=" + good + ",v1=" + other, hookBody, hookTime, 0, nil},
		{"unknown scheme ignored", hookSecret, "t=" + ts + ",v0=abc,v1=" + good, hookBody, hookTime, 0, nil},
		{"upper-case hex", hookSecret, "t=" + ts + ",v1=" + strings.ToUpper(good), hookBody, hookTime, 0, nil},
		{"at tolerance, late", hookSecret, "t=" + ts + ",v1=" + good, hookBody, hookTime.Add(time.Minute), time.Minute, nil},
		{"at tolerance, early", hookSecret, "t=" + ts + ",v1=" + good, hookBody, hookTime.Add(-time.Minute), time.Minute, nil},
		{"default tolerance", hookSecret, "t=" + ts + ",v1=" + good, hookBody, hookTime.Add(wire.DefaultWebhookTolerance), 0, nil},

		{"empty secret", nil, "t=" + ts + ",v1=" + good, hookBody, hookTime, 0, wire.ErrNoSecret},
		{"empty header", hookSecret, "", hookBody, hookTime, 0, wire.ErrSignatureMissing},
		{"blank header", hookSecret, "  ", hookBody, hookTime, 0, wire.ErrSignatureMissing},
		{"wrong secret", []byte("another"), "t=" + ts + ",v1=" + good, hookBody, hookTime, 0, wire.ErrSignatureMismatch},
		{"only old secret", hookSecret, "t=" + ts + ",v1=" + other, hookBody, hookTime, 0, wire.ErrSignatureMismatch},
		{"body changed", hookSecret, "t=" + ts + ",v1=" + good, append([]byte(" "), hookBody...), hookTime, 0, wire.ErrSignatureMismatch},
		{"timestamp changed", hookSecret, "t=" + strconv.FormatInt(hookTime.Unix()+1, 10) + ",v1=" + good, hookBody, hookTime, 0, wire.ErrSignatureMismatch},
		{"replayed late", hookSecret, "t=" + ts + ",v1=" + good, hookBody, hookTime.Add(time.Minute + time.Second), time.Minute, wire.ErrSignatureExpired},
		{"from the future", hookSecret, "t=" + ts + ",v1=" + good, hookBody, hookTime.Add(-time.Minute - time.Second), time.Minute, wire.ErrSignatureExpired},
		{"default tolerance passed", hookSecret, "t=" + ts + ",v1=" + good, hookBody, hookTime.Add(wire.DefaultWebhookTolerance + time.Second), 0, wire.ErrSignatureExpired},
		{"no t", hookSecret, "v1=" + good, hookBody, hookTime, 0, wire.ErrSignatureMalformed},
		{"no v1", hookSecret, "t=" + ts, hookBody, hookTime, 0, wire.ErrSignatureMalformed},
		{"two t", hookSecret, "t=" + ts + ",t=" + ts + ",v1=" + good, hookBody, hookTime, 0, wire.ErrSignatureMalformed},
		{"t not a number", hookSecret, "t=abc,v1=" + good, hookBody, hookTime, 0, wire.ErrSignatureMalformed},
		{"t leading zero", hookSecret, "t=0" + ts + ",v1=" + good, hookBody, hookTime, 0, wire.ErrSignatureMalformed},
		{"t milliseconds", hookSecret, "t=" + ts + "000,v1=" + mac(hookSecret, ts+"000", hookBody), hookBody, hookTime, 0, wire.ErrSignatureExpired},
		{"t plus sign", hookSecret, "t=+" + ts + ",v1=" + good, hookBody, hookTime, 0, wire.ErrSignatureMalformed},
		{"t huge", hookSecret, "t=99999999999999999999,v1=" + good, hookBody, hookTime, 0, wire.ErrSignatureMalformed},
		{"v1 short", hookSecret, "t=" + ts + ",v1=" + good[:62], hookBody, hookTime, 0, wire.ErrSignatureMalformed},
		{"v1 not hex", hookSecret, "t=" + ts + ",v1=" + strings.Repeat("z", 64), hookBody, hookTime, 0, wire.ErrSignatureMalformed},
		{"item without =", hookSecret, "t=" + ts + ",v1", hookBody, hookTime, 0, wire.ErrSignatureMalformed},
		{"header too long", hookSecret, "t=" + ts + ",v1=" + good + strings.Repeat(",x=y", 2000), hookBody, hookTime, 0, wire.ErrSignatureMalformed},
	}
	sentinels := []error{wire.ErrNoSecret, wire.ErrSignatureMissing, wire.ErrSignatureMalformed, wire.ErrSignatureMismatch, wire.ErrSignatureExpired}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := wire.VerifyWebhook(tt.secret, tt.header, tt.body, tt.now, tt.tol)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("VerifyWebhook(%q) = %v, want nil", tt.header, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("VerifyWebhook(%q) = %v, want %v", tt.header, err, tt.want)
			}
			for _, s := range sentinels {
				if s != tt.want && errors.Is(err, s) {
					t.Errorf("VerifyWebhook(%q) = %v, which is also %v", tt.header, err, s)
				}
			}
		})
	}
}

// FuzzVerifyWebhook checks that VerifyWebhook never panics, refuses with
// exactly one of its errors, accepts a header only when one of its v1
// values is the reference HMAC of its t and the body, and accepts what
// SignWebhook writes for any body and time. Seeds are in
// testdata/fuzz/FuzzVerifyWebhook.
//
//	go test ./wire -run '^$' -fuzz FuzzVerifyWebhook -fuzztime 60s
func FuzzVerifyWebhook(f *testing.F) {
	f.Add("t=1795514400,v1="+mac(hookSecret, "1795514400", hookBody), hookBody, int64(1795514400))
	f.Fuzz(func(t *testing.T, header string, body []byte, now int64) {
		nowT := time.Unix(now, 0)
		err := wire.VerifyWebhook(hookSecret, header, body, nowT, time.Minute)
		n := 0
		for _, s := range []error{wire.ErrSignatureMissing, wire.ErrSignatureMalformed, wire.ErrSignatureMismatch, wire.ErrSignatureExpired} {
			if errors.Is(err, s) {
				n++
			}
		}
		if err != nil && n != 1 {
			t.Fatalf("VerifyWebhook(%q) = %v: matches %d sentinel errors, want 1", header, err, n)
		}
		if err == nil && !signedBy(header, body, hookSecret) {
			t.Fatalf("VerifyWebhook(%q, %q) accepted a header without the body's HMAC", header, body)
		}
		signed := wire.SignWebhook(hookSecret, nowT, body)
		if err := wire.VerifyWebhook(hookSecret, signed, body, nowT, time.Minute); err != nil {
			t.Fatalf("VerifyWebhook refuses SignWebhook's %q for body %q: %v", signed, body, err)
		}
	})
}

// signedBy reports whether header has a t and a v1 value that is the
// HMAC of "<t>.<body>" keyed with secret, parsed by the simplest means.
func signedBy(header string, body, secret []byte) bool {
	var ts string
	var sigs []string
	for _, item := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(item), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, strings.ToLower(v))
		}
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if s == want {
			return true
		}
	}
	return false
}
