package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether/token"
)

func TestTokenCommand(t *testing.T) {
	r := runTether(t, nil, "", "token", "--token-secret", "s3cret", "--device", "pos-1", "--group", "shop-1", "--group", "eu,north", "--ttl", "2h")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	if strings.Count(r.stdout, "\n") != 1 || !strings.HasSuffix(r.stdout, "\n") {
		t.Fatalf("stdout %q, want one line: the token", r.stdout)
	}
	c, err := token.Verify([]byte("s3cret"), strings.TrimSpace(r.stdout), time.Now())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if c.Device != "pos-1" || !slices.Equal(c.Groups, []string{"shop-1", "eu", "north"}) {
		t.Errorf("claims %+v, want pos-1 [shop-1 eu north]", c)
	}
	if d := time.Until(c.ExpiresAt); d < 2*time.Hour-time.Minute || d > 2*time.Hour {
		t.Errorf("expires in %v, want about 2h", d)
	}
}

// TestTokenSecretSources checks that the secret is found like serve finds
// it: flag, else environment, else the data dir.
func TestTokenSecretSources(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token-secret"), []byte("file-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TETHER_TOKEN_SECRET": "env-secret", "TETHER_DATA_DIR": dir}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"flag", env, []string{"--token-secret", "flag-secret"}, "flag-secret"},
		{"env", env, nil, "env-secret"},
		{"data dir from env", map[string]string{"TETHER_DATA_DIR": dir}, nil, "file-secret"},
		{"data dir flag", nil, []string{"--data-dir", dir}, "file-secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runTether(t, tc.env, "", append([]string{"token", "--device", "d1"}, tc.args...)...)
			if r.code != 0 {
				t.Fatalf("code %d, stderr %q", r.code, r.stderr)
			}
			if _, err := token.Verify([]byte(tc.want), strings.TrimSpace(r.stdout), time.Now()); err != nil {
				t.Fatalf("token not signed with %q: %v", tc.want, err)
			}
		})
	}
}

func TestTokenNoSecret(t *testing.T) {
	dir := t.TempDir()
	r := runTether(t, nil, "", "token", "--device", "d1", "--data-dir", dir)
	want := "no token secret: pass --token-secret, set TETHER_TOKEN_SECRET, or point --data-dir at a node's data dir"
	if r.code != 1 || !strings.Contains(r.stderr, want) || r.stdout != "" {
		t.Fatalf("code %d, stdout %q, stderr %q; want 1 and %q", r.code, r.stdout, r.stderr, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("token created %d files in the data dir; it must not generate secrets", len(entries))
	}
}

func TestTokenUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--device is required"},
		{[]string{"--device", "pos 1"}, `--device "pos 1"`},
		{[]string{"--device", "d", "--group", "a/b"}, `--group "a/b"`},
		{[]string{"--device", "d", "--ttl", "0s"}, "--ttl 0s"},
		{[]string{"--device", "d", "--ttl", "forever"}, "not a duration"},
		{[]string{"--device", "d", "extra"}, `unexpected argument "extra"`},
	} {
		r := runTether(t, nil, "", append([]string{"token", "--token-secret", "s"}, tc.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("token %q: code %d, stderr %q; want 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}
