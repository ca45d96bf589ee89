package token_test

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/token"
)

var (
	secret = []byte("s3cret-for-tests-0123456789abcdef")
	now    = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
)

// MustSign signs c with secret or fails the test.
func MustSign(tb testing.TB, secret []byte, c token.Claims) string {
	tb.Helper()
	s, err := token.Sign(secret, c)
	if err != nil {
		tb.Fatalf("Sign: %v", err)
	}
	return s
}

// rawHS256 signs arbitrary header and claims JSON with HMAC-SHA256, so that
// tests can build tokens Sign refuses to make.
func rawHS256(header, claims string, key []byte) string {
	enc := base64.RawURLEncoding
	in := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(in))
	return in + "." + enc.EncodeToString(m.Sum(nil))
}

const hs256Header = `{"alg":"HS256","typ":"JWT"}`

func TestSignVerify(t *testing.T) {
	exp := now.Add(time.Hour)
	tok := MustSign(t, secret, token.Claims{Device: "pos-1", Groups: []string{"shop-1", "region:eu"}, ExpiresAt: exp})
	got, err := token.Verify(secret, tok, now)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.Device != "pos-1" || !slices.Equal(got.Groups, []string{"shop-1", "region:eu"}) || !got.ExpiresAt.Equal(exp) {
		t.Fatalf("Verify = %+v, want pos-1 [shop-1 region:eu] %v", got, exp)
	}
}

func TestSignOmitsEmptyGroups(t *testing.T) {
	tok := MustSign(t, secret, token.Claims{Device: "pos-1", ExpiresAt: now.Add(time.Hour)})
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"sub":"pos-1"`, `"exp":`, `"iat":`} {
		if !strings.Contains(string(payload), want) {
			t.Errorf("payload %s lacks %s", payload, want)
		}
	}
	if strings.Contains(string(payload), "groups") {
		t.Errorf("payload %s names groups; want them omitted", payload)
	}
	got, err := token.Verify(secret, tok, now)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.Groups != nil {
		t.Errorf("Groups = %q, want nil", got.Groups)
	}
}

func TestSignRejects(t *testing.T) {
	exp := now.Add(time.Hour)
	for _, tc := range []struct {
		name   string
		secret []byte
		c      token.Claims
		want   string
	}{
		{"empty secret", nil, token.Claims{Device: "d", ExpiresAt: exp}, "secret is empty"},
		{"bad device", secret, token.Claims{Device: "a b", ExpiresAt: exp}, "device id"},
		{"no device", secret, token.Claims{ExpiresAt: exp}, "device id"},
		{"bad group", secret, token.Claims{Device: "d", Groups: []string{"ok", "sh/op"}, ExpiresAt: exp}, "group id"},
		{"no expiry", secret, token.Claims{Device: "d"}, "expiry is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := token.Sign(tc.secret, tc.c)
			if tether.ErrorCode(err) != tether.EInvalid || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Sign error = %v, want EInvalid containing %q", err, tc.want)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	valid := MustSign(t, secret, token.Claims{Device: "pos-1", Groups: []string{"shop-1"}, ExpiresAt: now.Add(time.Hour)})
	exp := now.Add(time.Hour).Unix()
	future := `,"exp":` + itoa(exp)
	for _, tc := range []struct {
		name string
		tok  string
		want string
	}{
		{"empty", "", "missing token"},
		{"too long", strings.Repeat("a", token.MaxLength+1), "at most 8192"},
		{"garbage", "not-a-jwt", "malformed token"},
		{"bad base64", "!!!.???.###", "malformed token"},
		{"alg none", noneToken(t), "alg none; only HS256"},
		{"HS512", signedWith(t, jwt.SigningMethodHS512, secret), "alg HS512; only HS256"},
		{"HS384", signedWith(t, jwt.SigningMethodHS384, secret), "alg HS384; only HS256"},
		{"RS256", signedWith(t, jwt.SigningMethodRS256, rsaKey(t)), "alg RS256; only HS256"},
		{"no alg", rawHS256(`{"typ":"JWT"}`, `{"sub":"d"`+future+`}`, secret), `no "alg"`},
		{"unknown alg", rawHS256(`{"alg":"x\"y"}`, `{"sub":"d"`+future+`}`, secret), `alg "x\"y"`},
		{"tampered signature", tamperSignature(valid), "signature is invalid"},
		{"tampered claims", tamperClaims(t, valid), "signature is invalid"},
		{"wrong secret", MustSign(t, []byte("another-secret"), token.Claims{Device: "pos-1", ExpiresAt: now.Add(time.Hour)}), "signature is invalid"},
		{"expired", MustSign(t, secret, token.Claims{Device: "pos-1", ExpiresAt: now.Add(-time.Second)}), "token expired at 2026-11-24T09:59:59Z"},
		{"expires now", MustSign(t, secret, token.Claims{Device: "pos-1", ExpiresAt: now}), "token expired at"},
		{"no exp", rawHS256(hs256Header, `{"sub":"pos-1"}`, secret), `no "exp"`},
		{"exp not a number", rawHS256(hs256Header, `{"sub":"pos-1","exp":"soon"}`, secret), "malformed token"},
		{"not yet valid", rawHS256(hs256Header, `{"sub":"pos-1","nbf":`+itoa(exp)+future+`}`, secret), "not valid before"},
		{"no sub", rawHS256(hs256Header, `{"groups":["g"]`+future+`}`, secret), `no "sub"`},
		{"invalid sub", rawHS256(hs256Header, `{"sub":"pos 1"`+future+`}`, secret), `"sub" "pos 1" is not a valid device id`},
		{"long sub", rawHS256(hs256Header, `{"sub":"`+strings.Repeat("a", 129)+`"`+future+`}`, secret), "not a valid device id"},
		{"invalid group", rawHS256(hs256Header, `{"sub":"pos-1","groups":["shop-1","shop/2"]`+future+`}`, secret), `"shop/2" is not a valid group id`},
		{"empty group", rawHS256(hs256Header, `{"sub":"pos-1","groups":[""]`+future+`}`, secret), "not a valid group id"},
		{"groups not strings", rawHS256(hs256Header, `{"sub":"pos-1","groups":[1]`+future+`}`, secret), "malformed token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := token.Verify(secret, tc.tok, now)
			if err == nil {
				t.Fatalf("Verify = %+v, nil; want error containing %q", c, tc.want)
			}
			var te *tether.Error
			if !errors.As(err, &te) || te.Code != tether.EUnauthorized {
				t.Fatalf("Verify error = %#v, want *tether.Error with code %s", err, tether.EUnauthorized)
			}
			if !strings.Contains(te.Message, tc.want) {
				t.Errorf("message = %q, want it to contain %q", te.Message, tc.want)
			}
			if strings.Contains(err.Error(), string(secret)) {
				t.Errorf("error %q echoes the secret", err)
			}
		})
	}
}

func TestVerifyEmptySecret(t *testing.T) {
	tok := MustSign(t, secret, token.Claims{Device: "pos-1", ExpiresAt: now.Add(time.Hour)})
	if _, err := token.Verify(nil, tok, now); tether.ErrorCode(err) != tether.EInternal {
		t.Fatalf("Verify with empty secret: %v, want EInternal", err)
	}
}

// TestVerifySecretBytes checks that the secret is used byte for byte: no
// trimming, no decoding.
func TestVerifySecretBytes(t *testing.T) {
	tok := MustSign(t, []byte("abc\n"), token.Claims{Device: "pos-1", ExpiresAt: now.Add(time.Hour)})
	if _, err := token.Verify([]byte("abc"), tok, now); err == nil {
		t.Fatal("token signed with \"abc\\n\" verified with \"abc\"")
	}
	if _, err := token.Verify([]byte("abc\n"), tok, now); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func noneToken(t *testing.T) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": "pos-1", "exp": now.Add(time.Hour).Unix()}
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func signedWith(t *testing.T, m jwt.SigningMethod, key any) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": "pos-1", "exp": now.Add(time.Hour).Unix()}
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// tamperSignature changes the first character of the signature.
func tamperSignature(tok string) string {
	i := strings.LastIndexByte(tok, '.') + 1
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

// tamperClaims replaces the claims with others, keeping the signature.
func tamperClaims(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	claims := `{"sub":"pos-1","groups":["shop-2"],"exp":` + itoa(now.Add(time.Hour).Unix()) + `}`
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(claims))
	return strings.Join(parts, ".")
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
