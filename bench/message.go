package bench

import (
	"bytes"
	"encoding/json"
	"math/bits"
	"strconv"
	"time"

	"github.com/tetherpush/tether/wire"
)

// A bench message's data is a JSON object that names the run, the group
// and the message's sequence number in its group, padded to --size bytes:
//
//	{"bench":"3f9a1c0d","g":2,"s":1041,"pad":"xxxx…"}
//
// so that a device knows, without asking anyone, which message of which
// run it holds.

// payloadPrefix starts every bench payload.
const payloadPrefix = `{"bench":"`

// appendPayload appends the data of message s of group g of run to dst,
// padded to size bytes when size allows.
func appendPayload(dst []byte, run string, g, s, size int) []byte {
	start := len(dst)
	dst = append(dst, payloadPrefix...)
	dst = append(dst, run...)
	dst = append(dst, `","g":`...)
	dst = strconv.AppendInt(dst, int64(g), 10)
	dst = append(dst, `,"s":`...)
	dst = strconv.AppendInt(dst, int64(s), 10)
	dst = append(dst, `,"pad":"`...)
	for n := size - (len(dst) - start) - 2; n > 0; n-- {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...)
}

// payload is what a device reads from a message's data.
type payload struct {
	Run string `json:"bench"`
	G   int    `json:"g"`
	S   int    `json:"s"`
}

// parsePayload reads a bench payload; ok is false for data that is not one.
func parsePayload(data []byte) (p payload, ok bool) {
	if p, ok = fastPayload(data); ok {
		return p, true
	}
	if !bytes.HasPrefix(data, []byte("{")) || json.Unmarshal(data, &p) != nil || p.Run == "" || p.G < 0 || p.S < 0 {
		return payload{}, false
	}
	return p, true
}

// fastPayload parses the exact form appendPayload writes.
func fastPayload(b []byte) (payload, bool) {
	var p payload
	rest, ok := bytes.CutPrefix(b, []byte(payloadPrefix))
	if !ok {
		return p, false
	}
	i := bytes.IndexByte(rest, '"')
	if i <= 0 {
		return p, false
	}
	p.Run, rest = string(rest[:i]), rest[i+1:]
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"g":`)); !ok {
		return p, false
	}
	if p.G, rest, ok = cutInt(rest); !ok {
		return p, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"s":`)); !ok {
		return p, false
	}
	if p.S, rest, ok = cutInt(rest); !ok {
		return p, false
	}
	return p, len(rest) > 0 && (rest[0] == ',' || rest[0] == '}')
}

// cutInt reads a non-negative decimal number at the start of b.
func cutInt(b []byte) (int, []byte, bool) {
	n, i := 0, 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if i >= 15 {
			return 0, b, false
		}
		n = n*10 + int(b[i]-'0')
	}
	return n, b[i:], i > 0
}

// frame is a server frame as a device reads it.
type frame struct {
	Type        string
	ID          string
	Data        []byte // aliases the read buffer
	PublishedAt time.Time
	Attempt     int
	Code        string // error frames
	Message     string
}

// parseFrame decodes a server frame: message frames in the exact form
// wire.AppendMessage writes on a fast path, anything else with
// encoding/json into wire.ServerFrame.
func parseFrame(b []byte) (frame, error) {
	if f, ok := fastMessage(b); ok {
		return f, nil
	}
	var sf wire.ServerFrame
	if err := json.Unmarshal(b, &sf); err != nil {
		return frame{}, err
	}
	return frame{Type: sf.Type, ID: sf.ID, Data: sf.Data, PublishedAt: sf.PublishedAt,
		Attempt: sf.Attempt, Code: sf.Code, Message: sf.Message}, nil
}

const (
	msgPrefix     = `{"type":"message","id":"`
	msgTarget     = `","target":"`
	msgData       = `","data":`
	msgPublished  = `,"published_at":"`
	msgAttempt    = `","attempt":`
	publishedForm = "2006-01-02T15:04:05.000Z07:00"
)

func fastMessage(b []byte) (frame, bool) {
	f := frame{Type: wire.TypeMessage}
	rest, ok := bytes.CutPrefix(b, []byte(msgPrefix))
	if !ok {
		return f, false
	}
	i := bytes.IndexByte(rest, '"')
	if i <= 0 {
		return f, false
	}
	f.ID, rest = string(rest[:i]), rest[i:]
	if rest, ok = bytes.CutPrefix(rest, []byte(msgTarget)); !ok {
		return f, false
	}
	if i = bytes.IndexByte(rest, '"'); i < 0 {
		return f, false
	}
	if rest, ok = bytes.CutPrefix(rest[i:], []byte(msgData)); !ok {
		return f, false
	}
	j := bytes.LastIndex(rest, []byte(msgPublished))
	if j <= 0 {
		return f, false
	}
	f.Data, rest = rest[:j], rest[j+len(msgPublished):]
	if i = bytes.IndexByte(rest, '"'); i < 0 {
		return f, false
	}
	t, err := time.Parse(publishedForm, string(rest[:i]))
	if err != nil {
		return f, false
	}
	f.PublishedAt = t
	if rest, ok = bytes.CutPrefix(rest[i:], []byte(msgAttempt)); !ok {
		return f, false
	}
	if f.Attempt, rest, ok = cutInt(rest); !ok || string(rest) != "}" {
		return f, false
	}
	return f, true
}

// seqSet is the set of sequence numbers a device received.
type seqSet struct{ w []uint64 }

// add adds s and reports whether it was there already.
func (q *seqSet) add(s int) (had bool) {
	i, bit := s/64, uint64(1)<<(s%64)
	if i >= len(q.w) {
		q.w = append(q.w, make([]uint64, i+1-len(q.w))...)
	}
	had = q.w[i]&bit != 0
	q.w[i] |= bit
	return had
}

// has reports whether s is in the set.
func (q *seqSet) has(s int) bool {
	i := s / 64
	return s >= 0 && i < len(q.w) && q.w[i]&(uint64(1)<<(s%64)) != 0
}

// len returns the number of sequence numbers in the set.
func (q *seqSet) len() int {
	n := 0
	for _, w := range q.w {
		n += bits.OnesCount64(w)
	}
	return n
}

// missing returns how many of the accepted messages of ids (indexed by
// sequence number, "" for one not accepted) are not in the set, and the
// first of them ("" when none is missing).
func (q *seqSet) missing(ids []string) (n int, first string) {
	for s, id := range ids {
		if id != "" && !q.has(s) {
			if n == 0 {
				first = id
			}
			n++
		}
	}
	return n, first
}

// unconfirmed returns how many sequence numbers of the set have no
// accepted id in ids: deliveries of publishes that failed or were never
// answered.
func (q *seqSet) unconfirmed(ids []string) int {
	n := 0
	for i, w := range q.w {
		for w != 0 {
			b := bits.TrailingZeros64(w)
			w &^= 1 << b
			if s := i*64 + b; s >= len(ids) || ids[s] == "" {
				n++
			}
		}
	}
	return n
}
