package bolt_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
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

func TestEvents(t *testing.T) {
	storetest.RunEvents(t, func(t *testing.T) tether.EventStore { return MustOpen(t, t.TempDir()) })
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

// TestOpenRefusesOtherLayout: a file written by the first release (layout
// 1) is refused at open with an error that says so, and is left as it was.
func TestOpenRefusesOtherLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tether.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return b.Put([]byte("version"), []byte{1})
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = bolt.Open(path, bolt.Options{})
	if err == nil || !strings.Contains(err.Error(), "layout version [1]") || !strings.Contains(err.Error(), "Upgrading") {
		t.Fatalf("Open of a layout 1 file: %v, want an error naming layout 1 and the upgrade notes", err)
	}
	db, err = bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket([]byte("meta")).Get([]byte("version")); len(v) != 1 || v[0] != 1 {
			t.Errorf("version after the refused open: %v, want [1]", v)
		}
		if tx.Bucket([]byte("ids")) != nil {
			t.Error("the refused open created buckets")
		}
		return nil
	})
}
