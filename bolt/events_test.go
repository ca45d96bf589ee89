package bolt

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	bolt "go.etcd.io/bbolt"
)

// TestEventRecordsStaySmall: one call's events are split into records of
// about recordBytes, so that bbolt's leaves hold several and a commit
// does not write the records of earlier commits again.
func TestEventRecordsStaySmall(t *testing.T) {
	s := mustOpen(t, Options{})
	evs := make([]tether.LogEvent, 2000)
	longest := 0
	for i := range evs {
		evs[i] = tether.LogEvent{Type: tether.EventAcked, At: time.Now(), Attempts: 1,
			Message: fmt.Sprintf("01JDQ%021d", i), Target: "group:shop-12", Device: fmt.Sprintf("pos-%d", i)}
		longest = max(longest, len(encodeEvents(evs[i:i+1])))
	}
	if err := s.Append(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	records := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error {
			records++
			if len(v) >= recordBytes+longest {
				t.Errorf("record %x: %d bytes, want under %d", k, len(v), recordBytes+longest)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if total := len(encodeEvents(evs)); records < total/(recordBytes+longest) {
		t.Errorf("%d records for %d bytes of events", records, total)
	}
}

// TestPutEventsParts: events given in parts of any sizes (a Commit's
// changes, some without events) are stored in order, as one list, with
// the IDs putEvents reports.
func TestPutEventsParts(t *testing.T) {
	s := mustOpen(t, Options{})
	var parts [][]tether.LogEvent
	var all []tether.LogEvent
	for p, size := range []int{0, 1, 37, 0, 200, 3, 0} {
		part := make([]tether.LogEvent, size)
		for i := range part {
			part[i] = tether.LogEvent{Type: tether.EventAcked, At: time.Unix(0, int64(1e9*p+i)).UTC(), Attempts: 1,
				Message: fmt.Sprintf("m-%d-%d", p, i), Target: "group:g", Device: fmt.Sprintf("d%d", i)}
		}
		parts, all = append(parts, part), append(all, part...)
	}
	ids := make([]string, len(all))
	err := s.update(context.Background(), "test", func(tx *bolt.Tx) error { return putEvents(tx, ids, parts...) })
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Events(context.Background(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(all) {
		t.Fatalf("%d events read back, want %d", len(got), len(all))
	}
	for i, e := range got {
		want := all[i]
		want.ID = ids[i]
		if !e.At.Equal(want.At) || e.ID != want.ID || e.Message != want.Message || e.Device != want.Device {
			t.Fatalf("event %d = %+v, want %+v", i, e, want)
		}
	}
}
