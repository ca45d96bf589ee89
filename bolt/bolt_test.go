package bolt_test

import (
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/bolt"
	"github.com/tetherpush/tether/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// MustOpen opens a store in dir and closes it when the test ends.
func MustOpen(tb testing.TB, dir string) *bolt.Store {
	tb.Helper()
	s, err := bolt.Open(filepath.Join(dir, "tether.db"), bolt.Options{})
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) tether.Store { return MustOpen(t, t.TempDir()) })
}

func TestStoreDurable(t *testing.T) {
	storetest.RunDurable(t, func(t *testing.T, dir string) tether.Store { return MustOpen(t, dir) })
}

// TestOpenLocked: a second Open of a file held by another store gives up
// after OpenTimeout instead of waiting for ever.
func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	MustOpen(t, dir)
	_, err := bolt.Open(filepath.Join(dir, "tether.db"), bolt.Options{OpenTimeout: 50 * time.Millisecond})
	if err == nil {
		t.Fatal("second Open of a locked file succeeded, want a timeout error")
	}
}
