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
