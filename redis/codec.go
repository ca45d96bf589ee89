package redis

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/ledger"
)

// errCorrupt reports a stored value that cannot be decoded.
var errCorrupt = ledger.ErrCorrupt

// Records are the ledger's (internal/ledger), as in the embedded store;
// what Lua reads or writes is text: a log's ids and idem entries, and a
// group's spans.

// encodeSpans returns spans as "from:to,from:to" (the form member.lua
// keeps).
func encodeSpans(spans []tether.Span) string {
	var b strings.Builder
	for i, s := range spans {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(s.From, 10))
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(s.To, 10))
	}
	return b.String()
}

// decodeSpans decodes spans written by member.lua.
func decodeSpans(s string) ([]tether.Span, error) {
	if s == "" {
		return nil, nil
	}
	var out []tether.Span
	for _, part := range strings.Split(s, ",") {
		f, t, ok := strings.Cut(part, ":")
		from, err1 := strconv.ParseUint(f, 10, 64)
		to, err2 := strconv.ParseUint(t, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("spans %q: %w", clip(s), errCorrupt)
		}
		out = append(out, tether.Span{From: from, To: to})
	}
	return out, nil
}

// histMember returns a history range as a member of its zset: its To
// (8 bytes, so that members are unique) then the ledger's record.
func histMember(r tether.Range) string {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 48), r.To)
	return string(append(b, ledger.EncodeRange(r)...))
}

// decodeHist decodes a history member.
func decodeHist(m string) (tether.Range, error) {
	if len(m) < 8 {
		return tether.Range{}, fmt.Errorf("history: %w", errCorrupt)
	}
	return ledger.DecodeRange(binary.BigEndian.Uint64([]byte(m[:8])), []byte(m[8:]))
}

// parseIDs decodes a log's ids entry "seq|recipients".
func parseIDs(v string) (seq uint64, recipients int, err error) {
	s, n, ok := strings.Cut(v, "|")
	seq, err1 := strconv.ParseUint(s, 10, 64)
	r, err2 := strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("id entry %q: %w", clip(v), errCorrupt)
	}
	return seq, r, nil
}

// clip shortens a stored value quoted in an error.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:64] + "…"
}

// metaTarget returns the target of a bucket's meta entry "target\nclientID".
func metaTarget(meta string) string {
	t, _, _ := strings.Cut(meta, "\n")
	return t
}

// metaClientID returns the client id of a bucket's meta entry.
func metaClientID(meta string) string {
	_, c, _ := strings.Cut(meta, "\n")
	return c
}
