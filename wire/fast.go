package wire

// The fast path of DecodeClient. Nearly every client frame is an ack or a
// ping as the SDKs write them; decoding those with encoding/json (a
// validity scan, then reflection, then the ids again) was about 5 % of a
// busy node's CPU. decodeFast reads only that narrow shape and declines
// everything else, which DecodeClient then decodes with encoding/json as
// before. Whatever decodeFast accepts, encoding/json decodes to the same
// frame (FuzzDecodeFast checks this).

// fastParser reads one narrow shape of JSON from b.
type fastParser struct {
	b []byte
	i int
}

// decodeFast decodes {"type":"ack","ids":[…]} (the two keys in either
// order) and {"type":"ping"}, with JSON whitespace between tokens, when
// every string is printable ASCII without escapes and the ack carries at
// most MaxAckIDs ids. It reports false for anything else, including
// frames encoding/json would accept or refuse.
func decodeFast(b []byte) (ClientFrame, bool) {
	p := fastParser{b: b}
	p.space()
	if !p.byte('{') {
		return ClientFrame{}, false
	}
	var typ string
	var ids []string
	haveType, haveIDs := false, false
	for n := 0; ; n++ {
		p.space()
		if n > 0 {
			if p.byte('}') {
				break
			}
			if !p.byte(',') {
				return ClientFrame{}, false
			}
			p.space()
		}
		key, ok := p.str()
		if !ok {
			return ClientFrame{}, false
		}
		p.space()
		if !p.byte(':') {
			return ClientFrame{}, false
		}
		p.space()
		switch {
		case key == "type" && !haveType:
			if typ, haveType = p.str(); !haveType {
				return ClientFrame{}, false
			}
		case key == "ids" && !haveIDs:
			if ids, haveIDs = p.ids(); !haveIDs {
				return ClientFrame{}, false
			}
		default:
			return ClientFrame{}, false
		}
	}
	p.space()
	if p.i != len(b) {
		return ClientFrame{}, false
	}
	switch {
	case haveType && typ == TypeAck && haveIDs:
		return ClientFrame{Type: TypeAck, IDs: ids}, true
	case haveType && typ == TypePing && !haveIDs:
		return ClientFrame{Type: TypePing}, true
	}
	return ClientFrame{}, false
}

// space skips JSON whitespace.
func (p *fastParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		default:
			return
		}
	}
}

// byte consumes c if it is next.
func (p *fastParser) byte(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a string of printable ASCII without a backslash: the bytes
// encoding/json would decode it to.
func (p *fastParser) str() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return s, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return "", false
		}
		p.i++
	}
	return "", false
}

// ids reads an array of at most MaxAckIDs strings (never nil).
func (p *fastParser) ids() ([]string, bool) {
	if !p.byte('[') {
		return nil, false
	}
	ids := make([]string, 0, 4)
	p.space()
	if p.byte(']') {
		return ids, true
	}
	for len(ids) < MaxAckIDs {
		s, ok := p.str()
		if !ok {
			return nil, false
		}
		ids = append(ids, s)
		p.space()
		if p.byte(']') {
			return ids, true
		}
		if !p.byte(',') {
			return nil, false
		}
		p.space()
	}
	return nil, false
}
