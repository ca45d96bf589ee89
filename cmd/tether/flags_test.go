package main

import (
	"bytes"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"redis-url":         "TETHER_REDIS_URL",
		"listen":            "TETHER_LISTEN",
		"max-message-bytes": "TETHER_MAX_MESSAGE_BYTES",
	} {
		if got := envName(in); got != want {
			t.Errorf("envName(%q) = %q, want %q", in, got, want)
		}
	}
}

// testFlags is a flagSet with one flag of each kind.
type testFlags struct {
	s    string
	n    int
	d    time.Duration
	b    bool
	list []string
}

func newTestFlags(env map[string]string, help *bytes.Buffer) (*flagSet, *testFlags) {
	v := &testFlags{}
	f := newFlagSet("test", "test [flags]", "A test command.", func(k string) string { return env[k] }, help)
	f.String(&v.s, "some-string", "def", "a `word`")
	f.Int(&v.n, "count", 7, "a count")
	f.Duration(&v.d, "wait", 3*time.Second, "a wait")
	f.Bool(&v.b, "json", false, "print JSON")
	f.Strings(&v.list, "group", []string{"x"}, "groups")
	return f, v
}

func TestFlagPrecedence(t *testing.T) {
	env := map[string]string{
		"TETHER_SOME_STRING": "from-env",
		"TETHER_COUNT":       "9",
		"TETHER_WAIT":        "1m",
		"TETHER_JSON":        "true",
		"TETHER_GROUP":       "e1,e2",
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want testFlags
	}{
		{"defaults", nil, nil, testFlags{"def", 7, 3 * time.Second, false, []string{"x"}}},
		{"env beats default", env, nil, testFlags{"from-env", 9, time.Minute, true, []string{"e1", "e2"}}},
		{"flag beats env", env,
			[]string{"--some-string", "flag", "--count=1", "-wait", "2s", "--json=false", "--group", "a", "--group", "b,c"},
			testFlags{"flag", 1, 2 * time.Second, false, []string{"a", "b", "c"}}},
		{"empty env is unset", map[string]string{"TETHER_COUNT": ""}, nil, testFlags{"def", 7, 3 * time.Second, false, []string{"x"}}},
		{"list drops empty items", nil, []string{"--group", " a, ,b,"}, testFlags{"def", 7, 3 * time.Second, false, []string{"a", "b"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, got := newTestFlags(tc.env, &bytes.Buffer{})
			if err := f.parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if got.s != tc.want.s || got.n != tc.want.n || got.d != tc.want.d || got.b != tc.want.b || !slices.Equal(got.list, tc.want.list) {
				t.Fatalf("got %+v, want %+v", *got, tc.want)
			}
		})
	}
}

func TestFlagInvalidEnvNamesVariable(t *testing.T) {
	f, _ := newTestFlags(map[string]string{"TETHER_COUNT": "many", "TETHER_WAIT": "25"}, &bytes.Buffer{})
	err := f.parse(nil)
	if err == nil {
		t.Fatal("parse: nil error, want one naming the variables")
	}
	for _, want := range []string{"TETHER_COUNT", `"many" is not a whole number`, "TETHER_WAIT", `"25" is not a duration`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// A flag on the command line hides a bad variable.
	f, _ = newTestFlags(map[string]string{"TETHER_COUNT": "many"}, &bytes.Buffer{})
	if err := f.parse([]string{"--count", "3"}); err != nil {
		t.Errorf("parse with --count: %v, want nil", err)
	}
}

func TestFlagInvalidFlag(t *testing.T) {
	f, _ := newTestFlags(nil, &bytes.Buffer{})
	if err := f.parse([]string{"--count", "x"}); err == nil || !strings.Contains(err.Error(), "not a whole number") {
		t.Errorf("parse --count x: %v", err)
	}
	f, _ = newTestFlags(nil, &bytes.Buffer{})
	if err := f.parse([]string{"--nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("parse --nope: %v", err)
	}
	f, _ = newTestFlags(nil, &bytes.Buffer{})
	if err := f.parse([]string{"stray"}); err != nil {
		t.Fatal(err)
	}
	if err := f.noArgs(); err == nil || !strings.Contains(err.Error(), `"stray"`) {
		t.Errorf("noArgs: %v", err)
	}
}

func TestFlagHelp(t *testing.T) {
	var help bytes.Buffer
	f, _ := newTestFlags(nil, &help)
	if err := f.parse([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("parse --help: %v, want flag.ErrHelp", err)
	}
	out := help.String()
	for _, want := range []string{
		"Usage: tether test [flags]", "A test command.",
		"--some-string word", "(default def)", "$TETHER_SOME_STRING",
		"--count n", "(default 7)", "$TETHER_COUNT",
		"--wait duration", "(default 3s)", "$TETHER_WAIT",
		"--json ", "$TETHER_JSON",
		"--group value[,…]", "(default x)", "$TETHER_GROUP",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "(default false)") {
		t.Errorf("usage shows a false default:\n%s", out)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		24 * time.Hour:                 "24h",
		168 * time.Hour:                "168h",
		time.Minute:                    "1m",
		90 * time.Minute:               "1h30m",
		25 * time.Second:               "25s",
		time.Hour + time.Second:        "1h0m1s",
		1500 * time.Millisecond:        "1.5s",
		0:                              "0s",
		10*time.Minute + 0*time.Second: "10m",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
