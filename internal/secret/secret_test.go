package secret_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tetherpush/tether/internal/secret"
)

// MustLoad calls secret.Load or fails the test.
func MustLoad(tb testing.TB, dir string) secret.Secrets {
	tb.Helper()
	s, err := secret.Load(dir)
	if err != nil {
		tb.Fatalf("Load(%s): %v", dir, err)
	}
	return s
}

func mode(tb testing.TB, path string) os.FileMode {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestLoadGeneratesOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := MustLoad(t, dir)
	if !s.Generated {
		t.Error("Generated = false on first Load")
	}
	if len(s.TokenSecret) != 2*secret.GeneratedBytes || len(s.APIKey) != 2*secret.GeneratedBytes {
		t.Errorf("lengths %d, %d; want %d hex characters", len(s.TokenSecret), len(s.APIKey), 2*secret.GeneratedBytes)
	}
	if s.TokenSecret == s.APIKey {
		t.Error("token secret and API key are equal")
	}
	if want := filepath.Join(dir, "token-secret"); s.TokenSecretPath != want {
		t.Errorf("TokenSecretPath = %q, want %q", s.TokenSecretPath, want)
	}
	if want := filepath.Join(dir, "api-key"); s.APIKeyPath != want {
		t.Errorf("APIKeyPath = %q, want %q", s.APIKeyPath, want)
	}
	for _, p := range []string{s.TokenSecretPath, s.APIKeyPath} {
		if m := mode(t, p); m != 0o600 {
			t.Errorf("mode of %s = %v, want 0600", p, m)
		}
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("mode of %s = %v, want 0700", dir, m)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("data dir holds %d entries, want 2 (no temporary files left)", len(entries))
	}

	again := MustLoad(t, dir)
	if again.Generated {
		t.Error("Generated = true on second Load")
	}
	if again.TokenSecret != s.TokenSecret || again.APIKey != s.APIKey {
		t.Error("second Load returned other secrets")
	}
}

func TestLoadTrimsAndRejectsEmpty(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "token-secret", "  my secret \r\n")
	write(t, dir, "api-key", "key\n")
	s := MustLoad(t, dir)
	if s.TokenSecret != "my secret" || s.APIKey != "key" || s.Generated {
		t.Errorf("Load = %+v, want \"my secret\", \"key\", not generated", s)
	}

	write(t, dir, "api-key", "\n")
	if _, err := secret.Load(dir); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("Load with an empty api-key file: %v, want an error saying it is empty", err)
	}
}

func TestEnsureGivenValuesWin(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := secret.Ensure("tok", "key", dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.TokenSecret != "tok" || s.APIKey != "key" || s.Generated || s.TokenSecretPath != "" || s.APIKeyPath != "" {
		t.Errorf("Ensure = %+v, want the given values and no paths", s)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Ensure with both values created the data dir (%v)", err)
	}

	s, err = secret.Ensure("tok", "", dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.TokenSecret != "tok" || s.APIKey == "" || !s.Generated || s.APIKeyPath == "" {
		t.Errorf("Ensure = %+v, want given token secret and a generated API key", s)
	}
	if _, err := os.Stat(filepath.Join(dir, "token-secret")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Ensure wrote a token-secret file although one was given (%v)", err)
	}

	if _, err := secret.Ensure("", "", ""); err == nil {
		t.Error("Ensure without values and data dir: nil error")
	}
}

func TestLoadConcurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	got := make([]secret.Secrets, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = secret.Load(dir) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Load %d: %v", i, errs[i])
		}
		if got[i].TokenSecret != got[0].TokenSecret || got[i].APIKey != got[0].APIKey {
			t.Fatalf("Load %d returned other secrets than Load 0", i)
		}
	}
	final := MustLoad(t, dir)
	if final.TokenSecret != got[0].TokenSecret {
		t.Fatal("the file does not hold the secret the loaders returned")
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "token-secret", "from-file\n")
	for _, tc := range []struct {
		name, flag, env, dir, want string
	}{
		{"flag beats env and file", "from-flag", "from-env", dir, "from-flag"},
		{"env beats file", "", "from-env", dir, "from-env"},
		{"file", "", "", dir, "from-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := secret.Resolve(secret.TokenSecretFile, tc.flag, tc.env, tc.dir)
			if err != nil || got != tc.want {
				t.Fatalf("Resolve = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestResolveMissingDoesNotGenerate(t *testing.T) {
	dir := t.TempDir()
	_, err := secret.Resolve(secret.TokenSecretFile, "", "", dir)
	var me *secret.MissingError
	if !errors.As(err, &me) {
		t.Fatalf("Resolve error = %v, want *MissingError", err)
	}
	want := "no token secret: pass --token-secret, set TETHER_TOKEN_SECRET, or point --data-dir at a node's data dir"
	if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), filepath.Join(dir, "token-secret")) {
		t.Errorf("error = %q, want %q and the path", err, want)
	}
	_, err = secret.Resolve(secret.APIKeyFile, "", "", "")
	if err == nil || !strings.Contains(err.Error(), "no API key: pass --api-key, set TETHER_API_KEY") {
		t.Errorf("error = %v, want it to name --api-key and TETHER_API_KEY", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("Resolve created %d files", len(entries))
	}
	if _, err := secret.Resolve("other", "", "", dir); err == nil {
		t.Error("Resolve of an unknown name: nil error")
	}
}

func write(tb testing.TB, dir, name, content string) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
}
