package doctor

import (
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// TextOptions bounds the text form of a report. Zero fields mean the
// defaults.
type TextOptions struct {
	Places int // places listed; default DefaultTextPlaces
	Groups int // groups shown with their stacks; default DefaultTextGroups
	Frames int // frames shown per stack; default DefaultTextFrames
}

// Defaults of TextOptions.
const (
	DefaultTextPlaces = 10
	DefaultTextGroups = 5
	DefaultTextFrames = 16
)

// WriteText writes the report for a person: the verdict, the findings,
// the places where goroutines block and the largest groups with a
// representative stack.
func (r *Report) WriteText(w io.Writer, opt TextOptions) error {
	opt.Places = cmp0(opt.Places, DefaultTextPlaces)
	opt.Groups = cmp0(opt.Groups, DefaultTextGroups)
	opt.Frames = cmp0(opt.Frames, DefaultTextFrames)
	tw := &textWriter{w: w}
	r.writeSummary(tw)
	r.writeFindings(tw)
	r.writePlaces(tw, opt.Places)
	r.writeGroups(tw, opt)
	return tw.err
}

func cmp0(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// textWriter keeps the first write error.
type textWriter struct {
	w   io.Writer
	err error
}

func (t *textWriter) printf(format string, args ...any) {
	if t.err == nil {
		_, t.err = fmt.Fprintf(t.w, format, args...)
	}
}

func (r *Report) writeSummary(t *textWriter) {
	t.printf("Goroutine dump (%s): %s", r.Format, goroutines(r.Goroutines))
	if r.Truncated {
		t.printf(", truncated: the dump ends early")
		if r.Total > r.Goroutines {
			t.printf(" (it announces %d)", r.Total)
		}
	}
	t.printf(".\n")
	for _, h := range r.Header {
		t.printf("  %s\n", h)
	}
	word := strings.ToUpper(string(r.Verdict.Severity))
	if r.Verdict.Finding >= 0 && r.Findings[r.Verdict.Finding].Kind == "pool-deadlock" {
		word = "DEADLOCK"
	}
	t.printf("\nVerdict: %s — %s.\n", word, r.Verdict.Title)
	if r.Format == FormatCounted {
		t.printf("(A debug=1 dump has no wait states or wait times, and hides channel and select waits; ?debug=2 tells more.)\n")
	}
}

func (r *Report) writeFindings(t *textWriter) {
	if len(r.Findings) == 0 {
		return
	}
	t.printf("\nFindings:\n")
	for i, f := range r.Findings {
		t.printf("%d. [%s] %s\n", i+1, f.Severity, f.Summary)
		for _, d := range f.Details {
			t.printf("   - %s\n", d)
		}
	}
}

func (r *Report) writePlaces(t *textWriter, n int) {
	if len(r.Places) == 0 {
		return
	}
	t.printf("\nWhere goroutines wait, most first:\n")
	if t.err != nil {
		return
	}
	tw := tabwriter.NewWriter(t.w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  GOROUTINES\tWAIT\tSTATE\tLONGEST\tWHERE\n")
	for _, p := range r.Places[:min(n, len(r.Places))] {
		fmt.Fprintf(tw, "  %10d\t%s\t%s\t%s\t%s  %s\n", p.Count, p.Label, orDash(states(p.States)), orDash(minutes(p.LongestWaitMinutes)), p.Function, shortFileLine(p.Frame))
	}
	if rest := len(r.Places) - n; rest > 0 {
		fmt.Fprintf(tw, "  %10s\t… %d more places\t\t\t\n", "", rest)
	}
	t.err = tw.Flush()
}

func (r *Report) writeGroups(t *textWriter, opt TextOptions) {
	if len(r.Groups) == 0 {
		return
	}
	t.printf("\nGoroutines with the same stack, largest groups first (> marks where they wait):\n")
	for i, g := range r.Groups[:min(opt.Groups, len(r.Groups))] {
		t.printf("\n#%d  %s  %s", i+1, goroutines(g.Count), g.Label)
		if len(g.States) > 0 {
			t.printf("  [%s]", states(g.States))
		}
		if g.LongestWaitMinutes > 0 {
			t.printf("  longest %s", minutes(g.LongestWaitMinutes))
		}
		t.printf("\n")
		if len(g.Labels) > 0 {
			t.printf("    labels %s\n", labelsText(g.Labels))
		}
		writeStack(t, g, opt.Frames)
	}
	if rest := len(r.Groups) - opt.Groups; rest > 0 {
		t.printf("\n… %d more groups (--json lists them all).\n", rest)
	}
}

func writeStack(t *textWriter, g Group, n int) {
	if t.err != nil {
		return
	}
	tw := tabwriter.NewWriter(t.w, 0, 4, 2, ' ', 0)
	for i, f := range g.Frames {
		if i == n {
			fmt.Fprintf(tw, "    … %d more frames\t\n", len(g.Frames)-n)
			break
		}
		mark := " "
		if i == g.Place {
			mark = ">"
		}
		fmt.Fprintf(tw, "  %s %s\t%s\n", mark, f.Function, shortFileLine(f))
	}
	if g.Elided {
		fmt.Fprintf(tw, "    (the runtime elided frames)\t\n")
	}
	for _, c := range g.CreatedBy[:min(3, len(g.CreatedBy))] {
		fmt.Fprintf(tw, "    created by %s (%d)\t%s\n", c.Function, c.Count, shortFileLine(c.Frame))
	}
	t.err = tw.Flush()
}

// shortFileLine returns "dir/file.go:123" for a frame, or "" when the
// dump does not say.
func shortFileLine(f Frame) string {
	if f.File == "" {
		return ""
	}
	dir, file := path.Split(strings.ReplaceAll(f.File, `\`, "/"))
	dir = path.Base(strings.TrimSuffix(dir, "/"))
	s := file
	if dir != "." && dir != "/" && dir != "" {
		s = dir + "/" + file
	}
	if f.Line > 0 {
		s += ":" + strconv.Itoa(f.Line)
	}
	return s
}

// states returns "select 32, running 1", most first.
func states(m map[string]int) string {
	keys := slices.Sorted(maps.Keys(m))
	slices.SortStableFunc(keys, func(a, b string) int { return m[b] - m[a] })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		if len(keys) == 1 {
			parts = append(parts, k)
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func minutes(n int) string {
	switch n {
	case 0:
		return ""
	case 1:
		return "1 min"
	}
	return fmt.Sprintf("%d min", n)
}

func labelsText(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+strconv.Quote(m[k]))
	}
	return strings.Join(parts, " ")
}
