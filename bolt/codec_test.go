package bolt

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	bolt "go.etcd.io/bbolt"
)

func TestSourceAndEntryRoundTrip(t *testing.T) {
	for _, r := range []source{
		{},
		{last: 1 << 40, members: 100_000, trimmed: 77},
		{last: 90, live: 12, oldest: 3, holes: []run{{5, 5}, {7, 80}}},
	} {
		got, err := decodeSource(r.encode())
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Errorf("source %+v: got %+v, %v", r, got, err)
		}
	}
	for _, p := range []position{
		{source: tether.DeviceTarget("pos-1"), seq: 1, recipients: 1},
		{source: tether.GroupTarget("shop:1.a"), seq: 1 << 50, recipients: 1_000_000},
	} {
		got, rec, err := decodeEntry(p.encodeEntry([]byte("record")))
		if err != nil || got != p || string(rec) != "record" {
			t.Errorf("position %+v: got %+v, %q, %v", p, got, rec, err)
		}
	}
}

// TestSourcePurges: the purges of a device log, in any order, move oldest
// to the lowest position not purged, never past one that is not.
func TestSourcePurges(t *testing.T) {
	published := func(n int) *source {
		r := &source{}
		for range n {
			r.last++
			r.published()
		}
		return r
	}
	r := published(10)
	for _, seq := range []uint64{3, 5, 4, 9} {
		r.purged(seq)
	}
	if want := []run{{3, 5}, {9, 9}}; r.oldest != 1 || !reflect.DeepEqual(r.holes, want) || r.live != 6 {
		t.Fatalf("after 3, 5, 4, 9: oldest %d holes %v live %d, want 1 %v 6", r.oldest, r.holes, r.live, want)
	}
	r.purged(1)
	r.purged(2)
	if r.oldest != 6 || !reflect.DeepEqual(r.holes, []run{{9, 9}}) {
		t.Fatalf("after 1, 2: oldest %d holes %v, want 6 [{9 9}]", r.oldest, r.holes)
	}
	for _, seq := range []uint64{6, 7, 8, 10} {
		r.purged(seq)
	}
	if r.oldest != 11 || r.holes != nil || r.live != 0 {
		t.Fatalf("all purged: oldest %d holes %v live %d, want 11 [] 0", r.oldest, r.holes, r.live)
	}

	// Beyond maxHoles runs, purges are forgotten: oldest stops there
	// until the log holds nothing.
	r = published(3*maxHoles + 1)
	for i := range maxHoles + 1 {
		r.purged(uint64(3 + 2*i))
	}
	if len(r.holes) != maxHoles {
		t.Fatalf("%d holes, want %d", len(r.holes), maxHoles)
	}
	r.purged(1)
	r.purged(2)
	if r.oldest != 4 {
		t.Fatalf("oldest %d after 1, 2, want 4", r.oldest)
	}
	for seq := uint64(4); seq < r.last; seq++ { // all but the newest
		if seq%2 == 0 || seq > 3+2*maxHoles {
			r.purged(seq)
		}
	}
	if forgotten := uint64(3 + 2*maxHoles); r.oldest != forgotten || r.live != 1 {
		t.Fatalf("oldest %d live %d, want %d (forgotten) 1", r.oldest, r.live, forgotten)
	}
	r.purged(r.last)
	if r.oldest != r.last+1 || r.live != 0 {
		t.Fatalf("empty log: oldest %d live %d, want %d 0", r.oldest, r.live, r.last+1)
	}
}

func TestTimeKeyOrder(t *testing.T) {
	times := []int64{-1 << 62, -1, 0, 1, 1 << 62}
	for i := 1; i < len(times); i++ {
		a, b := timeKey(times[i-1], "z"), timeKey(times[i], "a")
		if bytes.Compare(a, b) >= 0 {
			t.Errorf("timeKey(%d) sorts after timeKey(%d)", times[i-1], times[i])
		}
	}
	if ts, id := splitTimeKey(timeKey(-42, "m1")); ts != -42 || id != "m1" {
		t.Errorf("splitTimeKey = %d, %q", ts, id)
	}
}

func TestLogKeysSortByPosition(t *testing.T) {
	a, b := logKey(tether.DeviceTarget("d"), 255), logKey(tether.DeviceTarget("d"), 256)
	if bytes.Compare(a, b) >= 0 || !bytes.HasPrefix(b, prefixKey("device:d")) {
		t.Errorf("log keys %x, %x: want ascending under the log's prefix", a, b)
	}
}

// FuzzDecode: the decoders of the store's own records return errors, never
// panic, on any bytes (a torn or foreign file). The shared records are
// fuzzed in internal/ledger.
func FuzzDecode(f *testing.F) {
	f.Add(source{last: 9, members: 3, trimmed: 1}.encode())
	f.Add(position{source: tether.GroupTarget("g"), seq: 7, recipients: 2}.encodeEntry([]byte("r")))
	f.Add(source{last: 9, live: 2, oldest: 3, holes: []run{{5, 6}}}.encode())
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add(encodeEvents([]tether.LogEvent{{Type: tether.EventAcked, Message: "m", Target: "device:d", Device: "d", Attempts: 1}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeSource(b)
		decodeEntry(b)
		if evs, err := decodeEvents(1, b); err == nil && !bytes.Equal(encodeEvents(evs), b) && len(b) < 1<<10 {
			// Varints have one canonical form only when minimal; a
			// record that decodes must at least decode again the same.
			if again, err := decodeEvents(1, encodeEvents(evs)); err != nil || !reflect.DeepEqual(again, evs) {
				t.Errorf("event record %x decodes to %+v, which does not survive a round trip", b, evs)
			}
		}
	})
}

// TestEventsCodec: events survive their record, and a cut record is
// corrupt, not a panic.
func TestEventsCodec(t *testing.T) {
	at := time.Date(2026, 12, 4, 8, 36, 44, 747_000_000, time.UTC)
	evs := []tether.LogEvent{
		{Type: tether.EventAcked, At: at, Message: "01M9035Q0MXF2HJVM655SZPMCG", Target: "group:shop-1", Device: "pos-1", Attempts: 3},
		{Type: tether.EventOffline, At: at.Add(time.Second), Device: "pos-1", Node: "n1", Code: 4409},
	}
	rec := encodeEvents(evs)
	got, err := decodeEvents(7, rec)
	if err != nil {
		t.Fatal(err)
	}
	for i := range evs {
		evs[i].ID = eventID(7, i)
	}
	if !reflect.DeepEqual(got, evs) {
		t.Errorf("decoded %+v\nwant %+v", got, evs)
	}
	for n := 1; n < len(rec); n++ {
		if _, err := decodeEvents(7, rec[:n]); err == nil && n != len(encodeEvents(evs[:1])) {
			t.Errorf("a record cut at %d of %d bytes decoded", n, len(rec))
		}
	}
}

// TestTimeOrderedBucketsFillPages: messages published in id order leave
// the pages of ids and exp nearly full (bbolt's default split leaves them
// half empty, which doubles the pages a publish writes and the file).
func TestTimeOrderedBucketsFillPages(t *testing.T) {
	s := mustOpen(t, Options{})
	data := []byte(`{"text":"` + strings.Repeat("x", 280) + `"}`)
	for i := range 200 {
		msgs := make([]*tether.Message, 100)
		for j := range msgs {
			k := i*100 + j
			msgs[j] = testMessage(k, fmt.Sprintf("d%d", k%1000))
			msgs[j].Data = data
		}
		if _, err := s.Publish(context.Background(), msgs); err != nil {
			t.Fatal(err)
		}
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketIDs, bucketExp} {
			st := tx.Bucket(name).Stats()
			fill := float64(st.LeafInuse) / float64(st.LeafPageN*s.db.Info().PageSize)
			if fill < 0.85 {
				t.Errorf("bucket %s: %d leaf pages %.0f %% full, want at least 85 %%", name, st.LeafPageN, 100*fill)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// encodeEvents returns the record of evs (appendEvent).
func encodeEvents(evs []tether.LogEvent) []byte {
	var b []byte
	for i := range evs {
		b = appendEvent(b, &evs[i])
	}
	return b
}
