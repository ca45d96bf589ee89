package tether

// Fuzz targets of the domain's parsers. Seeds are in testdata/fuzz/<Name>;
// `go test .` runs them. To fuzz:
//
//	go test . -run '^$' -fuzz '^FuzzParseTarget$' -fuzztime 60s
//	go test . -run '^$' -fuzz '^FuzzValidID$' -fuzztime 60s

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseTarget checks that ParseTarget never panics, accepts exactly
// "device:<id>" and "group:<id>" with a valid id, round-trips through
// Target.String, and refuses everything else with an EInvalid error whose
// message is short whatever the input (hostile input is clipped to 64
// bytes before it is quoted and echoed; quoting at most quadruples it).
func FuzzParseTarget(f *testing.F) {
	f.Add("device:pos-1")
	f.Add("group:shop-1")
	f.Add("device:a:b")
	f.Fuzz(func(t *testing.T, s string) {
		tgt, err := ParseTarget(s)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != EInvalid {
				t.Fatalf("ParseTarget(%q) error %#v, want an *Error with code %s", s, err, EInvalid)
			}
			if e.Message == "" || len(e.Message) > 400 {
				t.Fatalf("ParseTarget(%q): message of %d bytes: %q", s, len(e.Message), e.Message)
			}
			if want := refTarget(s); want {
				t.Fatalf("ParseTarget(%q) refused a valid target: %v", s, err)
			}
			return
		}
		if !refTarget(s) {
			t.Fatalf("ParseTarget(%q) accepted an invalid target as %+v", s, tgt)
		}
		if tgt.Kind != KindDevice && tgt.Kind != KindGroup || !ValidID(tgt.ID) {
			t.Fatalf("ParseTarget(%q) = %+v", s, tgt)
		}
		if got := tgt.String(); got != s {
			t.Fatalf("ParseTarget(%q).String() = %q, want the input back", s, got)
		}
		again, err := ParseTarget(tgt.String())
		if err != nil || again != tgt {
			t.Fatalf("ParseTarget(%q) = %+v, %v; want %+v", tgt.String(), again, err, tgt)
		}
		switch tgt.Kind {
		case KindDevice:
			if DeviceTarget(tgt.ID) != tgt {
				t.Fatalf("DeviceTarget(%q) != %+v", tgt.ID, tgt)
			}
		case KindGroup:
			if GroupTarget(tgt.ID) != tgt {
				t.Fatalf("GroupTarget(%q) != %+v", tgt.ID, tgt)
			}
		}
	})
}

// FuzzValidID checks ValidID against SPEC section 3 written out (1-128
// characters from [A-Za-z0-9._:-]), CheckID against ValidID, and that a
// valid id makes targets that round-trip.
func FuzzValidID(f *testing.F) {
	f.Add("pos-1")
	f.Add("a.b_c:d-E9")
	f.Add(strings.Repeat("x", 128))
	f.Fuzz(func(t *testing.T, s string) {
		ok := ValidID(s)
		if want := refID(s); ok != want {
			t.Fatalf("ValidID(%q) = %v, want %v", s, ok, want)
		}
		err := CheckID("device", s)
		if (err == nil) != ok {
			t.Fatalf("CheckID(%q) = %v, but ValidID = %v", s, err, ok)
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != EInvalid || len(e.Message) > 400 || !strings.Contains(e.Message, "device") {
				t.Fatalf("CheckID(%q) = %#v", s, err)
			}
			return
		}
		if !utf8.ValidString(s) {
			t.Fatalf("ValidID accepted invalid UTF-8 %q", s)
		}
		for _, tgt := range []Target{DeviceTarget(s), GroupTarget(s)} {
			got, err := ParseTarget(tgt.String())
			if err != nil || got != tgt {
				t.Fatalf("ParseTarget(%q) = %+v, %v; want %+v", tgt.String(), got, err, tgt)
			}
		}
	})
}

// refID is SPEC section 3's id rule, written independently of ValidID.
func refID(s string) bool {
	if n := len(s); n < 1 || n > 128 {
		return false
	}
	return strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") == ""
}

// refTarget is SPEC section 3's target rule, written independently of
// ParseTarget.
func refTarget(s string) bool {
	for _, kind := range []string{"device:", "group:"} {
		if strings.HasPrefix(s, kind) {
			return refID(s[len(kind):])
		}
	}
	return false
}
