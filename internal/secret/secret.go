// Package secret finds the token secret and the API key of a node, the same
// way for `tether serve`, `tether token` and `tether publish`: an explicit
// flag, else the TETHER_* environment variable, else a file in the node's
// data dir. Only serve creates the files (Ensure, Load); the other commands
// read them (Resolve).
package secret

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// File names in the data dir.
const (
	TokenSecretFile = "token-secret"
	APIKeyFile      = "api-key"
)

// Environment variables that hold the values (the TETHER_<FLAG> of
// --token-secret and --api-key).
const (
	EnvTokenSecret = "TETHER_TOKEN_SECRET"
	EnvAPIKey      = "TETHER_API_KEY"
)

// GeneratedBytes is how many random bytes a generated secret holds; the file
// holds them hex encoded.
const GeneratedBytes = 32

// maxFileSize bounds what is read from a secret file.
const maxFileSize = 64 << 10

// Secrets is what a node runs with.
type Secrets struct {
	TokenSecret string
	APIKey      string
	// Generated is true when this call created at least one of the files.
	Generated bool
	// TokenSecretPath and APIKeyPath are the files the values came from; ""
	// when the value was given (flag or environment).
	TokenSecretPath string
	APIKeyPath      string
}

// MissingError says that a secret was neither given nor found in the data
// dir. Its message tells the person what to do.
type MissingError struct {
	Name string // TokenSecretFile or APIKeyFile
	Path string // the file that was looked for; "" without a data dir
}

// Error implements error.
func (e *MissingError) Error() string {
	what, flag, env := describe(e.Name)
	msg := fmt.Sprintf("no %s: pass --%s, set %s, or point --data-dir at a node's data dir", what, flag, env)
	if e.Path != "" {
		msg += fmt.Sprintf(" (%s does not exist)", e.Path)
	}
	return msg
}

// describe returns a human name, the flag and the environment variable of a
// secret file name.
func describe(name string) (what, flag, env string) {
	if name == APIKeyFile {
		return "API key", "api-key", EnvAPIKey
	}
	return "token secret", "token-secret", EnvTokenSecret
}

// Resolve returns the secret called name (TokenSecretFile or APIKeyFile):
// flagValue when not empty, else envValue when not empty, else the content
// of <dataDir>/<name> without surrounding white space. It never creates a
// file: when the secret is nowhere, the error is a *MissingError.
func Resolve(name, flagValue, envValue, dataDir string) (string, error) {
	if name != TokenSecretFile && name != APIKeyFile {
		return "", fmt.Errorf("resolve secret: unknown name %q", name)
	}
	switch {
	case flagValue != "":
		return flagValue, nil
	case envValue != "":
		return envValue, nil
	case dataDir == "":
		return "", &MissingError{Name: name}
	}
	path := filepath.Join(dataDir, name)
	v, err := read(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", &MissingError{Name: name, Path: path}
	}
	return v, err
}

// Load returns the token secret and API key kept in dataDir, generating
// and writing each one that is missing. It is Ensure("", "", dataDir).
func Load(dataDir string) (Secrets, error) {
	return Ensure("", "", dataDir)
}

// Ensure returns the secrets a node runs with. A non-empty tokenSecret or
// apiKey (given by flag or environment) is used as is; each one that is
// empty is read from dataDir or, when its file does not exist, generated:
// GeneratedBytes random bytes, hex encoded, written atomically with mode
// 0600 (the directory is created with mode 0700). When two processes
// generate at once, both end up with the file that was written first.
func Ensure(tokenSecret, apiKey, dataDir string) (Secrets, error) {
	s := Secrets{TokenSecret: tokenSecret, APIKey: apiKey}
	if (tokenSecret == "" || apiKey == "") && dataDir == "" {
		return Secrets{}, errors.New("secrets: no data dir to keep the generated token secret and API key in")
	}
	var err error
	var gen bool
	if s.TokenSecret == "" {
		s.TokenSecretPath = filepath.Join(dataDir, TokenSecretFile)
		if s.TokenSecret, gen, err = readOrCreate(dataDir, TokenSecretFile); err != nil {
			return Secrets{}, err
		}
		s.Generated = s.Generated || gen
	}
	if s.APIKey == "" {
		s.APIKeyPath = filepath.Join(dataDir, APIKeyFile)
		if s.APIKey, gen, err = readOrCreate(dataDir, APIKeyFile); err != nil {
			return Secrets{}, err
		}
		s.Generated = s.Generated || gen
	}
	return s, nil
}

// read returns the content of a secret file without surrounding white
// space. An empty file is an error.
func read(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return "", fmt.Errorf("read secret %s: %w", path, err)
	}
	if len(b) > maxFileSize {
		return "", fmt.Errorf("read secret %s: larger than %d bytes; is it the right file?", path, maxFileSize)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("read secret %s: the file is empty; write a secret into it, or delete it and let serve generate one", path)
	}
	return v, nil
}

// readOrCreate returns the secret in dir/name, generating and writing it
// when the file does not exist. generated says whether this call wrote it.
func readOrCreate(dir, name string) (v string, generated bool, err error) {
	path := filepath.Join(dir, name)
	v, err = read(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return v, false, err
	}
	b := make([]byte, GeneratedBytes)
	if _, err := rand.Read(b); err != nil {
		return "", false, fmt.Errorf("generate %s: %w", name, err)
	}
	v = hex.EncodeToString(b)
	err = writeNew(dir, name, v+"\n")
	if errors.Is(err, fs.ErrExist) {
		// Another process wrote it first; use that one.
		v, err = read(path)
		return v, false, err
	}
	if err != nil {
		return "", false, err
	}
	return v, true, nil
}

// writeNew atomically creates dir/name holding content with mode 0600: it
// writes a temporary file, syncs it and links it into place, so that the
// file is either absent or complete, and an existing file is never
// replaced (the error then wraps fs.ErrExist). Where hard links are not
// supported it renames instead.
func writeNew(dir, name, content string) (err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+name+"-*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmpPath := tmp.Name()
	defer os.Remove(tmpPath) // after a link, or on failure; a no-op after rename
	if err := writeSync(tmp, content); err != nil {
		return fmt.Errorf("write %s: %w", tmpPath, err)
	}
	path := filepath.Join(dir, name)
	if err := os.Link(tmpPath, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write %s: %w", path, fs.ErrExist)
		}
		if err := os.Rename(tmpPath, path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return syncDir(dir)
}

// writeSync writes content to f with mode 0600, syncs and closes it.
func writeSync(f *os.File, content string) error {
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncDir makes a new directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync data dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("sync data dir: %w", err)
	}
	return nil
}
