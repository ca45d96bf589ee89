package doctor

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// ReportSchema names the JSON form of Report; it changes only when a
// field changes meaning or goes away.
const ReportSchema = "tether.doctor.goroutines/v1"

// pileupMin is the number of goroutines waiting for the same lock at the
// same place from which doctor reports a pile-up.
const pileupMin = 10

// maxGroupIDs is how many goroutine ids a group lists.
const maxGroupIDs = 10

// Severity ranks findings.
type Severity string

// Severities, least first.
const (
	SeverityOK       Severity = "ok"
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

func (s Severity) rank() int {
	switch s {
	case SeverityInfo:
		return 1
	case SeverityWarning:
		return 2
	case SeverityCritical:
		return 3
	}
	return 0
}

// Report is the analysis of a goroutine dump. Its JSON form is the output
// of `tether doctor goroutines --json`; docs/notes/doctor.md documents
// it.
type Report struct {
	Schema     string    `json:"schema"` // ReportSchema
	Format     Format    `json:"format"`
	Goroutines int       `json:"goroutines"`      // goroutines in the dump
	Total      int       `json:"total,omitempty"` // what the dump says it holds, when it says
	Truncated  bool      `json:"truncated"`
	Header     []string  `json:"header,omitempty"` // "panic: …", "SIGQUIT: quit", …
	Verdict    Verdict   `json:"verdict"`
	Findings   []Finding `json:"findings"` // most severe first
	Waits      []Count   `json:"waits"`    // goroutines per kind of wait, most first
	Places     []Place   `json:"places"`   // where parked goroutines block, most first
	Groups     []Group   `json:"groups"`   // goroutines with the same stack, most first
}

// Verdict is the one-line answer.
type Verdict struct {
	Severity Severity `json:"severity"`
	Title    string   `json:"title"`
	Finding  int      `json:"finding"` // index of the finding it comes from; -1 for none
}

// Finding is something doctor recognised, in plain words.
type Finding struct {
	// Kind is one of "pool-deadlock", "pool-nested", "pool-stalled",
	// "pool-busy" and "lock-pileup".
	Kind               string   `json:"kind"`
	Severity           Severity `json:"severity"`
	Title              string   `json:"title"`   // a few words
	Summary            string   `json:"summary"` // one sentence
	Details            []string `json:"details,omitempty"`
	Pool               string   `json:"pool,omitempty"` // pool findings: the library
	Goroutines         int      `json:"goroutines"`     // goroutines concerned
	Holding            int      `json:"holding,omitempty"`
	InUse              int      `json:"in_use,omitempty"`
	LongestWaitMinutes int      `json:"longest_wait_minutes,omitempty"`
}

// Count is the number of goroutines with one kind of wait.
type Count struct {
	Wait  Wait `json:"wait"`
	Count int  `json:"count"`
}

// Place is where parked goroutines block: the first frame outside the
// standard library (for pool waits, the caller of the pool), with the
// kind of wait.
type Place struct {
	Frame
	Wait               Wait           `json:"wait"`
	Detail             string         `json:"detail,omitempty"`
	Pool               string         `json:"pool,omitempty"`
	Label              string         `json:"label"`
	Count              int            `json:"count"`
	States             map[string]int `json:"states,omitempty"`
	LongestWaitMinutes int            `json:"longest_wait_minutes"`
	Group              int            `json:"group"` // index in Report.Groups of the largest group blocked here
}

// Group is the goroutines whose stacks call the same functions in the
// same order; arguments, addresses and lines may differ.
type Group struct {
	Count              int               `json:"count"`
	Wait               Wait              `json:"wait"`
	Detail             string            `json:"detail,omitempty"`
	Pool               string            `json:"pool,omitempty"`
	Label              string            `json:"label"`
	States             map[string]int    `json:"states,omitempty"`
	LongestWaitMinutes int               `json:"longest_wait_minutes"`
	Place              int               `json:"place"`  // index in Frames of the place; -1 for none
	Frames             []Frame           `json:"frames"` // of one member
	Elided             bool              `json:"elided,omitempty"`
	CreatedBy          []Creator         `json:"created_by,omitempty"`
	IDs                []int64           `json:"ids,omitempty"` // the first goroutine ids
	Labels             map[string]string `json:"labels,omitempty"`
}

// Creator counts the members of a group started by one go statement.
type Creator struct {
	Frame
	Count int `json:"count"`
}

// Analyze groups the goroutines of d, ranks where they block and names
// what it recognises: pool deadlocks, stalled and busy pools, lock
// pile-ups.
func Analyze(d *Dump) *Report {
	a := newAnalysis(d)
	for i := range d.Goroutines {
		a.add(&d.Goroutines[i])
	}
	return a.report()
}

// analysis is the state of Analyze.
type analysis struct {
	d       *Dump
	waits   map[*Frame]map[string]waitInfo // classify, cached by stack and state
	keys    map[*Frame]string              // stack keys, cached by stack
	groups  map[string]*groupAcc
	order   []*groupAcc
	byWait  map[Wait]int
	pools   map[*poolKind]*poolStats
	kinds   []*poolKind
	callers map[*poolKind]map[string]bool
}

// groupAcc accumulates one group.
type groupAcc struct {
	Group
	info     waitInfo
	creators map[Frame]int
	waits    map[Wait]int      // members per wait
	infos    map[Wait]waitInfo // the classification of a member, per wait
}

func newAnalysis(d *Dump) *analysis {
	a := &analysis{
		d:       d,
		waits:   make(map[*Frame]map[string]waitInfo),
		keys:    make(map[*Frame]string),
		groups:  make(map[string]*groupAcc),
		byWait:  make(map[Wait]int),
		pools:   make(map[*poolKind]*poolStats),
		kinds:   poolKinds(),
		callers: make(map[*poolKind]map[string]bool),
	}
	return a
}

// stackID returns a pointer that identifies an interned stack.
func stackID(frames []Frame) *Frame {
	if len(frames) == 0 {
		return nil
	}
	return &frames[0]
}

func (a *analysis) classify(g *Goroutine) waitInfo {
	id := stackID(g.Frames)
	m := a.waits[id]
	if m == nil {
		m = make(map[string]waitInfo)
		a.waits[id] = m
	}
	w, ok := m[g.State]
	if !ok {
		w = classify(g)
		if w.pool != nil {
			w.pool = a.kind(w.pool.name)
		}
		m[g.State] = w
	}
	return w
}

// kind returns the analysis' own poolKind of a name, so that pointers
// compare equal.
func (a *analysis) kind(name string) *poolKind {
	for _, k := range a.kinds {
		if k.name == name {
			return k
		}
	}
	return nil
}

func (a *analysis) key(frames []Frame) string {
	id := stackID(frames)
	if k, ok := a.keys[id]; ok {
		return k
	}
	var b strings.Builder
	for _, f := range frames {
		b.WriteString(f.Function)
		b.WriteByte('\n')
	}
	k := b.String()
	a.keys[id] = k
	return k
}

// add files one goroutine into its group.
func (a *analysis) add(g *Goroutine) {
	w := a.classify(g)
	a.byWait[w.wait] += g.Count
	key := a.key(g.Frames)
	acc := a.groups[key]
	if acc == nil {
		acc = &groupAcc{info: w, creators: make(map[Frame]int), waits: make(map[Wait]int), infos: make(map[Wait]waitInfo)}
		acc.Frames, acc.Elided, acc.Labels, acc.Place = g.Frames, g.Elided, g.Labels, w.place
		a.groups[key] = acc
		a.order = append(a.order, acc)
	}
	acc.Count += g.Count
	acc.waits[w.wait] += g.Count
	if _, ok := acc.infos[w.wait]; !ok {
		acc.infos[w.wait] = w
	}
	if g.State != "" {
		if acc.States == nil {
			acc.States = make(map[string]int)
		}
		acc.States[g.State] += g.Count
	}
	acc.LongestWaitMinutes = max(acc.LongestWaitMinutes, g.WaitMinutes)
	if g.ID != 0 && len(acc.IDs) < maxGroupIDs {
		acc.IDs = append(acc.IDs, g.ID)
	}
	if g.CreatedBy != nil {
		acc.creators[*g.CreatedBy] += g.Count
	}
	if w.wait == WaitPool && w.caller >= 0 {
		if a.callers[w.pool] == nil {
			a.callers[w.pool] = make(map[string]bool)
		}
		a.callers[w.pool][g.Frames[w.caller].Function] = true
	}
}

// report finishes the analysis.
func (a *analysis) report() *Report {
	r := &Report{
		Schema:     ReportSchema,
		Format:     a.d.Format,
		Goroutines: a.d.Count(),
		Total:      a.d.Total,
		Truncated:  a.d.Truncated,
		Header:     a.d.Header,
	}
	r.Groups = a.finishGroups()
	r.Places = places(r.Groups)
	r.Waits = a.waitCounts()
	r.Findings = append(a.poolFindings(), pileups(r.Places, r.Groups)...)
	slices.SortStableFunc(r.Findings, func(x, y Finding) int {
		return cmp.Or(y.Severity.rank()-x.Severity.rank(), y.Goroutines-x.Goroutines)
	})
	r.Verdict = verdict(r)
	return r
}

// finishGroups ranks the groups, largest first.
func (a *analysis) finishGroups() []Group {
	slices.SortStableFunc(a.order, func(x, y *groupAcc) int {
		return cmp.Or(y.Count-x.Count, y.LongestWaitMinutes-x.LongestWaitMinutes)
	})
	groups := make([]Group, len(a.order))
	for i, acc := range a.order {
		// The wait of most members names the group.
		best := acc.info.wait
		for w, n := range acc.waits {
			if n > acc.waits[best] || n == acc.waits[best] && w < best {
				best = w
			}
		}
		acc.info = acc.infos[best]
		acc.Wait, acc.Detail = acc.info.wait, acc.info.detail
		if acc.info.pool != nil {
			acc.Pool = acc.info.pool.name
		}
		acc.Label = label(acc.Wait, acc.Detail, acc.Pool)
		for f, n := range acc.creators {
			acc.CreatedBy = append(acc.CreatedBy, Creator{Frame: f, Count: n})
		}
		slices.SortFunc(acc.CreatedBy, func(x, y Creator) int {
			return cmp.Or(y.Count-x.Count, strings.Compare(x.Function, y.Function), x.Line-y.Line)
		})
		groups[i] = acc.Group
	}
	return groups
}

// places ranks the places where parked goroutines block.
func places(groups []Group) []Place {
	type key struct {
		fn, file string
		line     int
		label    string
	}
	index := make(map[key]int)
	var out []Place
	for gi, g := range groups {
		if !g.Wait.parked() || g.Place < 0 || g.Place >= len(g.Frames) {
			continue
		}
		f := g.Frames[g.Place]
		k := key{f.Function, f.File, f.Line, g.Label}
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, Place{Frame: f, Wait: g.Wait, Detail: g.Detail, Pool: g.Pool, Label: g.Label, Group: gi})
		}
		p := &out[i]
		p.Count += g.Count
		p.LongestWaitMinutes = max(p.LongestWaitMinutes, g.LongestWaitMinutes)
		for s, n := range g.States {
			if p.States == nil {
				p.States = make(map[string]int)
			}
			p.States[s] += n
		}
	}
	slices.SortStableFunc(out, func(x, y Place) int {
		return cmp.Or(y.Count-x.Count, y.LongestWaitMinutes-x.LongestWaitMinutes)
	})
	return out
}

// waitCounts counts the goroutines per kind of wait, most first.
func (a *analysis) waitCounts() []Count {
	var out []Count
	for w, n := range a.byWait {
		out = append(out, Count{Wait: w, Count: n})
	}
	slices.SortFunc(out, func(x, y Count) int {
		return cmp.Or(y.Count-x.Count, strings.Compare(string(x.Wait), string(y.Wait)))
	})
	return out
}

// poolFindings applies the pool heuristics (see nestedAcquisition) to
// every goroutine.
func (a *analysis) poolFindings() []Finding {
	var stats []*poolStats
	statsOf := func(k *poolKind) *poolStats {
		s := a.pools[k]
		if s == nil {
			s = &poolStats{kind: k}
			a.pools[k] = s
			stats = append(stats, s)
		}
		return s
	}
	nested := make(map[*poolKind]map[[2]Frame]int)
	for i := range a.d.Goroutines {
		g := &a.d.Goroutines[i]
		w := a.classify(g)
		if w.wait == WaitPool {
			s := statsOf(w.pool)
			s.waiting += g.Count
			s.longest = max(s.longest, g.WaitMinutes)
			if holder, ok := nestedAcquisition(g.Frames, w, a.callers[w.pool]); ok {
				s.holding += g.Count
				if nested[w.pool] == nil {
					nested[w.pool] = make(map[[2]Frame]int)
				}
				nested[w.pool][[2]Frame{holder, g.Frames[w.caller]}] += g.Count
			}
			continue
		}
		if w.wait == WaitRuntime {
			continue
		}
		for _, k := range a.kinds {
			if usesPool(k, g.Frames) {
				statsOf(k).inUse += g.Count
			}
		}
	}
	for _, s := range stats {
		for hw, n := range nested[s.kind] {
			s.nested = append(s.nested, nests{holder: hw[0], waiter: hw[1], count: n})
		}
		slices.SortFunc(s.nested, func(x, y nests) int {
			return cmp.Or(y.count-x.count, strings.Compare(x.holder.Function, y.holder.Function), x.holder.Line-y.holder.Line)
		})
	}
	return poolFindings(stats)
}

// usesPool reports whether a stack that does not wait for a connection
// of k uses one: it runs the library's code, and is not one of its
// background goroutines.
func usesPool(k *poolKind, frames []Frame) bool {
	for _, f := range frames {
		if k.owns(f.Function) {
			return !k.isBackground(frames)
		}
	}
	return false
}

// pileups reports the places where many goroutines wait for a lock, with
// the goroutines of the same type that may hold it.
func pileups(places []Place, groups []Group) []Finding {
	var out []Finding
	for _, p := range places {
		if p.Count < pileupMin || (p.Wait != WaitMutex && p.Wait != WaitRLock && p.Wait != WaitLock) {
			continue
		}
		f := Finding{
			Kind:               "lock-pileup",
			Severity:           SeverityWarning,
			Goroutines:         p.Count,
			LongestWaitMinutes: p.LongestWaitMinutes,
			Title:              fmt.Sprintf("%d goroutines pile up on a lock in %s", p.Count, p.Function),
			Summary: fmt.Sprintf("%s in %s (%s).", subject(p.Count, phrase(p.Wait, p.Detail, p.Pool)),
				p.Function, shortFileLine(p.Frame)),
		}
		if holders := lockHolders(p, groups); len(holders) > 0 {
			f.Details = append(f.Details, "goroutines in other methods of the same type, which may hold the lock: "+strings.Join(holders, "; "))
		}
		out = append(out, f)
	}
	return out
}

// lockHolders lists the groups not waiting at p whose stacks run a method
// of the receiver type of p's function.
func lockHolders(p Place, groups []Group) []string {
	recv := receiver(p.Function)
	if recv == "" {
		return nil
	}
	var out []string
	for _, g := range groups {
		if g.Wait == p.Wait && g.Place >= 0 && g.Place < len(g.Frames) && g.Frames[g.Place] == p.Frame {
			continue
		}
		for _, f := range g.Frames {
			if strings.HasPrefix(f.Function, recv) && f.Function != p.Function {
				out = append(out, fmt.Sprintf("%s in %s (%s, %s)", goroutines(g.Count), f.Function, shortFileLine(f), g.Label))
				break
			}
		}
		if len(out) == 3 {
			break
		}
	}
	return out
}

// receiver returns "pkg.(*T)." for a method "pkg.(*T).M", else "".
func receiver(fn string) string {
	i := strings.Index(fn, ".(*")
	if i < 0 {
		return ""
	}
	j := strings.Index(fn[i:], ").")
	if j < 0 {
		return ""
	}
	return fn[:i+j+2]
}

// verdict picks the answer from the most severe finding.
func verdict(r *Report) Verdict {
	for i, f := range r.Findings {
		if f.Severity.rank() >= SeverityWarning.rank() {
			return Verdict{Severity: f.Severity, Title: f.Title, Finding: i}
		}
	}
	v := Verdict{Severity: SeverityOK, Title: "no deadlock and no pile-up found", Finding: -1}
	if len(r.Findings) > 0 {
		v.Severity = r.Findings[0].Severity
		v.Title += "; " + r.Findings[0].Title
		v.Finding = 0
	}
	return v
}
