// Package token signs and verifies device tokens (SPEC section 5): JWTs
// signed with HS256, keyed with the bytes of the node's token secret exactly
// as given, carrying the device id in "sub", its groups in "groups" and an
// expiry in "exp".
package token

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/tetherpush/tether"
)

// MaxLength is the longest token Verify parses; longer ones are rejected
// before any decoding. A token naming a few dozen groups fits comfortably.
const MaxLength = 8 << 10

// Alg is the only signing algorithm tether signs with and accepts.
const Alg = "HS256"

// Claims is what a device token says about its bearer.
type Claims struct {
	Device    string    // "sub": a valid device id
	Groups    []string  // "groups": valid group ids; omitted when empty
	ExpiresAt time.Time // "exp": whole seconds; required
}

// jwtClaims is the JSON form of Claims.
type jwtClaims struct {
	Groups []string `json:"groups,omitempty"`
	jwt.RegisteredClaims
}

// Sign returns a token for c signed with secret. It sets "iat" to the
// current time. Its errors are *tether.Error with code EInvalid: an empty
// secret, an invalid device or group id, or a zero ExpiresAt.
func Sign(secret []byte, c Claims) (string, error) {
	if len(secret) == 0 {
		return "", tether.Errorf(tether.EInvalid, "sign token: the token secret is empty")
	}
	if err := tether.CheckID("device", c.Device); err != nil {
		return "", err
	}
	for _, g := range c.Groups {
		if err := tether.CheckID("group", g); err != nil {
			return "", err
		}
	}
	if c.ExpiresAt.IsZero() {
		return "", tether.Errorf(tether.EInvalid, "sign token: an expiry is required")
	}
	jc := jwtClaims{
		Groups: c.Groups,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Device,
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
			IssuedAt:  jwt.NewNumericDate(time.Now()),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jc).SignedString(secret)
	if err != nil {
		return "", &tether.Error{Code: tether.EInternal, Message: "sign token", Err: err}
	}
	return s, nil
}

// Verify checks tok against secret at time now and returns its claims.
//
// It accepts only HS256 tokens whose signature matches secret, that carry
// an "exp" later than now, a "sub" that is a valid device id and only valid
// group ids. Every rejection is a *tether.Error with code EUnauthorized and
// a message saying what is wrong; no message contains the secret. An empty
// secret is a configuration mistake of the caller and gives EInternal.
func Verify(secret []byte, tok string, now time.Time) (Claims, error) {
	if len(secret) == 0 {
		return Claims{}, tether.Errorf(tether.EInternal, "verify token: the token secret is empty")
	}
	switch {
	case tok == "":
		return Claims{}, unauthorized("missing token", nil)
	case len(tok) > MaxLength:
		return Claims{}, unauthorized(fmt.Sprintf("token is %d bytes long; at most %d are accepted", len(tok), MaxLength), nil)
	}
	var jc jwtClaims
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{Alg}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	parsed, err := p.ParseWithClaims(tok, &jc, func(*jwt.Token) (any, error) { return secret, nil })
	if err != nil {
		return Claims{}, explain(parsed, &jc, err)
	}
	return checkClaims(&jc)
}

// checkClaims validates the ids of a token whose signature and times are
// good.
func checkClaims(jc *jwtClaims) (Claims, error) {
	if jc.Subject == "" {
		return Claims{}, unauthorized(`token has no "sub" claim; it must name the device id`, nil)
	}
	if !tether.ValidID(jc.Subject) {
		return Claims{}, unauthorized(fmt.Sprintf(`token "sub" %q is not a valid device id (1-128 characters from [A-Za-z0-9._:-])`, clip(jc.Subject)), nil)
	}
	for _, g := range jc.Groups {
		if !tether.ValidID(g) {
			return Claims{}, unauthorized(fmt.Sprintf(`token "groups" entry %q is not a valid group id (1-128 characters from [A-Za-z0-9._:-])`, clip(g)), nil)
		}
	}
	c := Claims{Device: jc.Subject, ExpiresAt: jc.ExpiresAt.Time.UTC()}
	if len(jc.Groups) > 0 {
		c.Groups = jc.Groups
	}
	return c, nil
}

// explain turns a jwt parse error into an EUnauthorized error a person can
// act on. The jwt error is kept as the cause.
func explain(t *jwt.Token, jc *jwtClaims, err error) error {
	alg := ""
	if t != nil {
		alg, _ = t.Header["alg"].(string)
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return unauthorized("malformed token: want a JWT of three base64url parts separated by dots, with JSON header and claims", err)
	case alg == "":
		return unauthorized(`token header names no "alg"; only HS256 is accepted`, err)
	case alg != Alg:
		return unauthorized(fmt.Sprintf("token signed with alg %s; only HS256 is accepted", quoteOdd(alg)), err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return unauthorized("token signature is invalid: it was signed with another token secret or altered", err)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return unauthorized(`token has no "exp" claim; tokens must expire`, err)
	case errors.Is(err, jwt.ErrTokenExpired) && jc.ExpiresAt != nil:
		return unauthorized(fmt.Sprintf("token expired at %s; issue a new one", jc.ExpiresAt.UTC().Format(time.RFC3339)), err)
	case errors.Is(err, jwt.ErrTokenNotValidYet) && jc.NotBefore != nil:
		return unauthorized(fmt.Sprintf("token is not valid before %s; check the clocks", jc.NotBefore.UTC().Format(time.RFC3339)), err)
	}
	return unauthorized("invalid token", err)
}

func unauthorized(msg string, cause error) *tether.Error {
	return &tether.Error{Code: tether.EUnauthorized, Message: msg, Err: cause}
}

// quoteOdd returns s clipped, quoted unless it is a plain word such as an
// algorithm name.
func quoteOdd(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return strconv.Quote(clip(s))
		}
	}
	return clip(s)
}

// clip shortens hostile input before it is echoed in an error message.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
