package doctor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limits of ParseGoroutines. They bound the memory one line or one
// goroutine of a damaged input can take.
const (
	maxLineBytes   = 64 << 10 // longer lines are cut
	maxHeaderLines = 20       // lines of a crash header kept in Dump.Header
	maxFrames      = 1024     // frames kept per goroutine; the rest count as elided
)

// ErrNoGoroutines is returned by ParseGoroutines for an input that holds
// no goroutine.
var ErrNoGoroutines = errors.New("no goroutine found: not a Go goroutine dump")

// ParseGoroutines parses a goroutine dump of any Go program: the counted
// form of /debug/pprof/goroutine?debug=1, the per-goroutine form of
// ?debug=2 and runtime.Stack, and what the runtime prints on a panic, a
// fatal error or SIGQUIT (see Format). Text around the dump, such as log
// lines before a panic or the registers after a SIGQUIT dump, is skipped.
//
// It reads r to the end, line by line, and keeps one copy of each distinct
// stack, so a dump of a million goroutines that wait in a few places takes
// little memory. Truncated input is not an error: the goroutines read so
// far are returned and Dump.Truncated is set. It returns ErrNoGoroutines
// when the input holds no goroutine. When reading r fails, it returns the
// goroutines read so far, if any, together with the error.
func ParseGoroutines(r io.Reader) (*Dump, error) {
	p := newParser()
	br := bufio.NewReaderSize(r, 64<<10)
	var buf []byte
	var readErr error
	for {
		line, err := readLine(br, buf)
		buf = line
		if err == nil || len(line) > 0 {
			inside, skipped := p.open, p.d.Skipped
			p.line(string(line))
			if err != nil && (inside || p.d.Skipped > skipped) {
				// The last line has no line ending: the input was cut
				// inside a goroutine, or in the line that starts one.
				p.d.Truncated = true
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				readErr = err
			}
			break
		}
	}
	d := p.finish()
	switch {
	case len(d.Goroutines) == 0 && readErr != nil:
		return nil, fmt.Errorf("read dump: %w", readErr)
	case len(d.Goroutines) == 0:
		return nil, ErrNoGoroutines
	case readErr != nil:
		d.Truncated = true
		return d, fmt.Errorf("read dump: %w", readErr)
	}
	return d, nil
}

// readLine reads one line into buf[:0] without its line ending, keeping
// at most maxLineBytes of it. It returns io.EOF with the last line when
// the input does not end in a newline.
func readLine(br *bufio.Reader, buf []byte) ([]byte, error) {
	buf = buf[:0]
	for {
		chunk, err := br.ReadSlice('\n')
		if room := maxLineBytes - len(buf); room > 0 {
			buf = append(buf, chunk[:min(len(chunk), room)]...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		buf = trimEOL(buf)
		return buf, err
	}
}

func trimEOL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// parser is the state of ParseGoroutines.
type parser struct {
	d       Dump
	open    bool      // cur is being read
	counted bool      // cur is a record of a counted dump
	cur     Goroutine // the goroutine being read
	pending string    // traceback: a function line waiting for its file line
	created bool      // traceback: a "created by" line waiting for its file line
	// complete reports that the last line read of cur ended a frame, so
	// that the input may end there without cutting a goroutine.
	complete bool
	seen     bool               // a goroutine has started
	strs     map[string]string  // interned names, files and states
	stacks   map[string][]Frame // interned stacks, keyed by their frames
	creators map[Frame]*Frame   // interned "created by" frames
	key      strings.Builder    // scratch for internStack
	frames   []Frame            // scratch for cur.Frames
}

func newParser() *parser {
	return &parser{strs: make(map[string]string), stacks: make(map[string][]Frame), creators: make(map[Frame]*Frame)}
}

// line consumes one line of input.
func (p *parser) line(s string) {
	if p.open && p.counted && p.countedLine(s) {
		return
	}
	if p.open && !p.counted && p.tracebackLine(s) {
		return
	}
	p.startLine(s)
}

// startLine handles a line outside a goroutine, or one that starts a new
// goroutine.
func (p *parser) startLine(s string) {
	if strings.TrimSpace(s) == "" {
		p.close()
		return
	}
	if n, ok := parseProfileTotal(s); ok {
		p.close()
		if p.d.Format == "" {
			p.d.Format = FormatCounted
		}
		p.d.Total += n
		return
	}
	if n, ok := parseCountedRecord(s); ok && p.d.Format == FormatCounted {
		p.close()
		p.begin(Goroutine{Count: n}, true)
		return
	}
	if g, crash, ok := parseHeader(s); ok {
		p.close()
		if p.d.Format == "" {
			p.d.Format = FormatTraceback
			if crash || len(p.d.Header) > 0 {
				p.d.Format = FormatCrash
			}
		}
		p.begin(g, false)
		return
	}
	p.close()
	if !p.seen && len(p.d.Header) < maxHeaderLines {
		p.d.Header = append(p.d.Header, s)
		return
	}
	p.d.Skipped++
}

// countedLine handles a line inside a record of a counted dump and
// reports whether it was one.
func (p *parser) countedLine(s string) bool {
	switch {
	case strings.HasPrefix(s, "# labels:"):
		p.cur.Labels = parseLabels(strings.TrimSpace(s[len("# labels:"):]))
	case strings.HasPrefix(s, "#"):
		p.addFrame(parseCountedFrame(s[1:]))
		p.complete = true
	default:
		return false
	}
	return true
}

// tracebackLine handles a line inside a goroutine of a traceback or crash
// dump and reports whether it was one.
func (p *parser) tracebackLine(s string) bool {
	switch {
	case strings.TrimSpace(s) == "" || strings.HasPrefix(s, "goroutine "):
		return false // ends the goroutine; startLine takes it
	case strings.HasPrefix(s, "\t") || strings.HasPrefix(s, "    "):
		p.fileLine(s)
	case strings.HasPrefix(s, "created by "):
		p.flushPending()
		fn, creator := parseCreatedBy(s[len("created by "):])
		p.cur.CreatedBy = &Frame{Function: fn}
		p.cur.CreatorID = creator
		p.created, p.complete = true, false
	case strings.HasPrefix(s, "...") && strings.HasSuffix(s, "...") && strings.Contains(s, "elided"):
		p.flushPending()
		p.cur.Elided = true
		p.complete = true
	default:
		fn, ok := parseCall(s)
		if !ok {
			p.d.Skipped++
			p.complete = false
			return true
		}
		p.flushPending()
		p.pending = fn
		p.complete = false
	}
	return true
}

// fileLine handles the "\tFILE:LINE +0x…" line after a function line or
// a "created by" line.
func (p *parser) fileLine(s string) {
	file, line, ok := parseFileLine(s)
	switch {
	case !ok:
		// "\tgoroutine running on other thread; stack unavailable" and
		// the like: a note, not a frame.
		p.complete = p.pending == "" && !p.created
	case p.pending != "":
		p.addFrame(Frame{Function: p.pending, File: file, Line: line})
		p.pending = ""
		p.complete = true
	case p.created:
		p.cur.CreatedBy.File, p.cur.CreatedBy.Line = file, line
		p.created = false
		p.complete = true
	}
}

// flushPending adds a function line whose file line never came.
func (p *parser) flushPending() {
	if p.pending != "" {
		p.addFrame(Frame{Function: p.pending})
		p.pending = ""
	}
}

func (p *parser) addFrame(f Frame) {
	if len(p.frames) >= maxFrames {
		p.cur.Elided = true
		return
	}
	f.Function, f.File = p.str(f.Function), p.str(f.File)
	p.frames = append(p.frames, f)
}

// begin starts reading goroutine g, a record of a counted dump when
// counted is set.
func (p *parser) begin(g Goroutine, counted bool) {
	p.cur = g
	p.open, p.seen, p.counted = true, true, counted
	p.pending, p.created, p.complete = "", false, false
	p.frames = p.frames[:0]
}

// close ends the goroutine being read, if any, and adds it to the dump.
func (p *parser) close() {
	if !p.open {
		return
	}
	p.flushPending()
	p.cur.Frames = p.internStack(p.frames)
	p.cur.State = p.str(p.cur.State)
	if c := p.cur.CreatedBy; c != nil {
		p.cur.CreatedBy = p.internFrame(*c)
	}
	p.d.Goroutines = append(p.d.Goroutines, p.cur)
	p.open = false
	p.cur = Goroutine{}
}

// finish ends the input and returns the dump.
func (p *parser) finish() *Dump {
	if p.open {
		if !p.complete || p.pending != "" || p.created || len(p.frames) == 0 {
			p.d.Truncated = true
		}
		p.close()
	}
	if p.d.Total > 0 && p.d.Count() < p.d.Total {
		p.d.Truncated = true
	}
	return &p.d
}

// str interns s.
func (p *parser) str(s string) string {
	if s == "" {
		return ""
	}
	if t, ok := p.strs[s]; ok {
		return t
	}
	s = strings.Clone(s)
	p.strs[s] = s
	return s
}

// internFrame returns the one shared copy of f.
func (p *parser) internFrame(f Frame) *Frame {
	f.Function, f.File = p.str(f.Function), p.str(f.File)
	if c, ok := p.creators[f]; ok {
		return c
	}
	c := &f
	p.creators[f] = c
	return c
}

// internStack returns the one shared copy of frames.
func (p *parser) internStack(frames []Frame) []Frame {
	if len(frames) == 0 {
		return nil
	}
	p.key.Reset()
	for _, f := range frames {
		p.key.WriteString(f.Function)
		p.key.WriteByte(0)
		p.key.WriteString(f.File)
		p.key.WriteByte(0)
		p.key.WriteString(strconv.Itoa(f.Line))
		p.key.WriteByte(0)
	}
	if s, ok := p.stacks[p.key.String()]; ok {
		return s
	}
	s := append([]Frame(nil), frames...)
	p.stacks[p.key.String()] = s
	return s
}

// parseProfileTotal parses "goroutine profile: total N".
func parseProfileTotal(s string) (int, bool) {
	rest, ok := strings.CutPrefix(s, "goroutine profile: total ")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(rest))
	return n, err == nil && n >= 0
}

// parseCountedRecord parses "N @ 0x… 0x…", the first line of a record of
// a counted dump.
func parseCountedRecord(s string) (int, bool) {
	count, rest, ok := strings.Cut(s, " @")
	if !ok || (rest != "" && rest[0] != ' ') {
		return 0, false
	}
	n, err := strconv.Atoi(count)
	return n, err == nil && n > 0
}

// parseCountedFrame parses "\t0xPC\tFUNC+0xOFF\tFILE:LINE", the part of a
// frame line of a counted dump after its "#".
func parseCountedFrame(s string) Frame {
	var fields []string
	for f := range strings.SplitSeq(s, "\t") {
		if f = strings.TrimSpace(f); f != "" {
			fields = append(fields, f)
		}
	}
	if len(fields) < 2 {
		return Frame{Function: "?"} // a PC the profile could not name
	}
	f := Frame{Function: fields[1]}
	if i := strings.LastIndex(f.Function, "+0x"); i > 0 {
		f.Function = f.Function[:i]
	}
	if len(fields) >= 3 {
		f.File, f.Line, _ = parseFileLine(strings.Join(fields[2:], " "))
	}
	return f
}

// parseHeader parses "goroutine 18 [chan receive, 3 minutes]:" and its
// variants: "gp=… m=… mp=…" before the bracket (crash dumps), "locked to
// thread", "synctest bubble N" and "labels:{…}" inside it. crash reports
// the gp= form, which only crash dumps print.
func parseHeader(s string) (g Goroutine, crash, ok bool) {
	rest, ok := strings.CutPrefix(s, "goroutine ")
	if !ok {
		return g, false, false
	}
	digits := 0
	for digits < len(rest) && rest[digits] >= '0' && rest[digits] <= '9' {
		digits++
	}
	id, err := strconv.ParseInt(rest[:digits], 10, 64)
	if err != nil {
		return g, false, false
	}
	rest = rest[digits:]
	open := strings.IndexByte(rest, '[')
	if open < 0 || (open > 0 && rest[0] != ' ') {
		return g, false, false
	}
	crash = strings.Contains(rest[:open], "gp=")
	inner := rest[open+1:]
	if i := strings.LastIndex(inner, "]:"); i >= 0 {
		inner = inner[:i]
	}
	if i := strings.Index(inner, " labels:{"); i >= 0 {
		g.Labels = parseLabels(inner[i+len(" labels:"):])
		inner = inner[:i]
	}
	parts := strings.Split(inner, ", ")
	g.ID, g.Count, g.State = id, 1, strings.TrimSpace(parts[0])
	for _, part := range parts[1:] {
		switch {
		case part == "locked to thread":
			g.LockedToThread = true
		case strings.HasSuffix(part, " minutes") || strings.HasSuffix(part, " minute"):
			n, _, _ := strings.Cut(part, " ")
			if m, err := strconv.Atoi(n); err == nil && m >= 0 {
				g.WaitMinutes = m
			}
		}
	}
	return g, crash, true
}

// parseLabels parses the quoted keys and values of `{"k":"v", "k2":"v2"}`
// and `{"k": "v"}`. It stops at the first thing it does not understand.
func parseLabels(s string) map[string]string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "{")
	var strs []string
	for {
		s = strings.TrimLeft(s, " ,:")
		if s == "" || s[0] != '"' {
			break
		}
		q, err := strconv.QuotedPrefix(s)
		if err != nil {
			break
		}
		v, err := strconv.Unquote(q)
		if err != nil {
			break
		}
		strs = append(strs, v)
		s = s[len(q):]
	}
	if len(strs) < 2 {
		return nil
	}
	m := make(map[string]string, len(strs)/2)
	for i := 0; i+1 < len(strs); i += 2 {
		m[strs[i]] = strs[i+1]
	}
	return m
}

// parseCall parses a function line, "pkg.(*T).M(0xc000012345, {0x1, 0x2})"
// or "main.f(...)", and returns the function name.
func parseCall(s string) (string, bool) {
	if !strings.HasSuffix(s, ")") {
		return "", false
	}
	i := strings.LastIndexByte(s, '(')
	if i <= 0 {
		return "", false
	}
	fn := s[:i]
	if strings.ContainsAny(fn, " \t") {
		return "", false
	}
	return fn, true
}

// parseCreatedBy parses what follows "created by ": "main.main in
// goroutine 1", or "main.main" before Go 1.21.
func parseCreatedBy(s string) (fn string, creator int64) {
	fn = strings.TrimSpace(s)
	if i := strings.LastIndex(fn, " in goroutine "); i >= 0 {
		creator, _ = strconv.ParseInt(strings.TrimSpace(fn[i+len(" in goroutine "):]), 10, 64)
		fn = fn[:i]
	}
	return fn, creator
}

// parseFileLine parses "\t/path/file.go:123 +0x1d fp=… sp=… pc=…".
func parseFileLine(s string) (file string, line int, ok bool) {
	s = strings.TrimLeft(s, " \t")
	for end := len(s); end > 0; {
		i := strings.LastIndexByte(s[:end], ':')
		if i <= 0 {
			return "", 0, false
		}
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j > i+1 && (j == len(s) || s[j] == ' ') {
			n, err := strconv.Atoi(s[i+1 : j])
			if err != nil {
				return "", 0, false
			}
			return s[:i], n, true
		}
		end = i
	}
	return "", 0, false
}
