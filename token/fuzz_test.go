package token_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/token"
)

// fuzzSecret and fuzzNow are fixed so that the seed corpus in
// testdata/fuzz/FuzzVerify holds tokens that verify.
var (
	fuzzSecret = []byte("fuzz-secret")
	fuzzNow    = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

// FuzzVerify checks that Verify never panics, rejects only with
// EUnauthorized errors that do not echo the secret, and accepts only claims
// that hold valid ids and have not expired.
func FuzzVerify(f *testing.F) {
	f.Add("")
	f.Add("a.b.c")
	f.Add(MustSign(f, fuzzSecret, token.Claims{Device: "pos-1", Groups: []string{"shop-1"}, ExpiresAt: fuzzNow.Add(time.Hour)}))
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := token.Verify(fuzzSecret, tok, fuzzNow)
		if err != nil {
			var te *tether.Error
			if !errors.As(err, &te) || te.Code != tether.EUnauthorized {
				t.Fatalf("Verify error = %#v, want EUnauthorized", err)
			}
			if strings.Contains(te.Message, string(fuzzSecret)) {
				t.Fatalf("message %q echoes the secret", te.Message)
			}
			return
		}
		if len(tok) > token.MaxLength {
			t.Fatalf("accepted a token of %d bytes", len(tok))
		}
		if !tether.ValidID(c.Device) {
			t.Fatalf("accepted device %q", c.Device)
		}
		for _, g := range c.Groups {
			if !tether.ValidID(g) {
				t.Fatalf("accepted group %q", g)
			}
		}
		if !c.ExpiresAt.After(fuzzNow) {
			t.Fatalf("accepted a token that expired at %v", c.ExpiresAt)
		}
	})
}
