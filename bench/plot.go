package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// WritePlot writes a self-contained HTML page (inline SVG, no script) with
// the run's timeline: open connections, throughput and delivery latency
// per second.
func (r *Report) WritePlot(w io.Writer) error {
	tl := r.Timeline
	col := func(f func(Point) float64) []float64 {
		v := make([]float64, len(tl))
		for i, p := range tl {
			v[i] = f(p)
		}
		return v
	}
	var b strings.Builder
	title := fmt.Sprintf("tether bench %s (%s)", r.Run, r.Mode)
	fmt.Fprintf(&b, "<!doctype html>\n<meta charset=utf-8>\n<title>%s</title>\n", html.EscapeString(title))
	b.WriteString("<style>body{font:14px system-ui,sans-serif;margin:24px;color:#222}h1{font-size:18px}" +
		"p{margin:4px 0}svg{display:block;margin:16px 0}</style>\n")
	fmt.Fprintf(&b, "<h1>%s</h1>\n", html.EscapeString(title))
	fmt.Fprintf(&b, "<p>%s, started %s</p>\n", html.EscapeString(r.summary()), r.Started.Format("2006-01-02 15:04:05 MST"))
	b.WriteString(svgChart("Connections open", "", false, r.Phases, []series{{"open", "#555", col(func(p Point) float64 { return float64(p.Open) })}}))
	if r.Messages != nil {
		b.WriteString(svgChart("Messages per second", "msgs/s", false, r.Phases, []series{
			{"published", "#1f77b4", col(func(p Point) float64 { return float64(p.Published) })},
		}))
		b.WriteString(svgChart("Deliveries per second (first receipts)", "deliveries/s", false, r.Phases, []series{
			{"delivered", "#2ca02c", col(func(p Point) float64 { return float64(p.Delivered) })},
		}))
		b.WriteString(svgChart("Delivery latency, published_at to receipt", "ms, log scale", true, r.Phases, []series{
			{"p50", "#2ca02c", col(func(p Point) float64 { return p.P50 })},
			{"p99", "#ff7f0e", col(func(p Point) float64 { return p.P99 })},
			{"max", "#d62728", col(func(p Point) float64 { return p.Max })},
		}))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// summary is one line about the run's load.
func (r *Report) summary() string {
	s := r.Settings
	if r.Mode == "idle" {
		return fmt.Sprintf("%d idle connections held %gs", s.Conns, s.Duration)
	}
	return fmt.Sprintf("%d connections in %d groups, %d msgs/s of %d bytes for %gs", s.Conns, s.Groups, s.Rate, s.Size, s.Duration)
}

type series struct {
	name, color string
	v           []float64
}

// Chart geometry.
const (
	chartW, chartH = 860, 220
	padL, padR     = 64, 110
	padT, padB     = 28, 32
)

// svgChart draws series over seconds, with the phases shaded; logY plots
// log10 (zeros are gaps).
func svgChart(title, unit string, logY bool, phases []Phase, ss []series) string {
	n, hi, lo := 0, 0.0, math.Inf(1)
	for _, s := range ss {
		n = max(n, len(s.v))
		for _, v := range s.v {
			hi = max(hi, v)
			if v > 0 {
				lo = min(lo, v)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg" font-size="12">`, chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<text x="%d" y="16" font-weight="bold">%s</text><text x="%d" y="16" fill="#777">%s</text>`,
		padL, html.EscapeString(title), chartW-padR+8, html.EscapeString(unit))
	x0, y0, x1, y1 := float64(padL), float64(chartH-padB), float64(chartW-padR), float64(padT)
	if n == 0 || hi <= 0 {
		fmt.Fprintf(&b, `<text x="%g" y="%g" fill="#777">no data</text></svg>`+"\n", x0+10, (y0+y1)/2)
		return b.String()
	}
	ymin, ymax, ystep := 0.0, 0.0, niceStep(hi/4)
	ymax = math.Ceil(hi/ystep) * ystep
	scale := func(v float64) float64 { return v }
	if logY {
		ymin, ymax, ystep = math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi)), 1
		if ymax <= ymin {
			ymax = ymin + 1
		}
		scale = math.Log10
	}
	px := func(t float64) float64 { return x0 + (x1-x0)*t/float64(n) } // n seconds wide
	py := func(v float64) float64 { return y0 - (y0-y1)*(scale(v)-ymin)/(ymax-ymin) }
	for _, ph := range phases { // shaded phases, named at the top
		a, z := px(min(ph.From, float64(n))), px(min(ph.To, float64(n)))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%g" width="%.1f" height="%g" fill="#f3f3f3"/><text x="%.1f" y="%g" fill="#999" font-size="10">%s</text>`,
			a, y1, max(z-a, 1), y0-y1, a+2, y1+11, html.EscapeString(ph.Name))
	}
	for yv := ymin; yv <= ymax+ystep/2; yv += ystep { // y grid and labels
		label := yv
		if logY {
			label = math.Pow(10, yv)
		}
		y := py(math.Pow(10, yv))
		if !logY {
			y = py(yv)
		}
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#e4e4e4"/><text x="%g" y="%.1f" text-anchor="end">%s</text>`,
			x0, y, x1, y, x0-6, y+4, short(label))
	}
	xstep := niceStep(float64(n) / 6)
	for t := 0.0; t <= float64(n); t += xstep { // x labels, seconds
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%gs</text>`, px(t), y0+18, t)
	}
	for j, s := range ss {
		var pts []string
		flush := func() {
			if len(pts) > 0 {
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, s.color, strings.Join(pts, " "))
			}
			pts = pts[:0]
		}
		for i, v := range s.v {
			if logY && v <= 0 {
				flush()
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(float64(i)+0.5), py(v))) // mid-second
		}
		flush()
		fmt.Fprintf(&b, `<text x="%g" y="%d" fill="%s">%s</text>`, x1+8, padT+16+16*j, s.color, html.EscapeString(s.name))
	}
	fmt.Fprintf(&b, `<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#ccc"/></svg>`+"\n", x0, y1, x1-x0, y0-y1)
	return b.String()
}

// niceStep returns 1, 2 or 5 times a power of ten, at least x (and at
// least 1).
func niceStep(x float64) float64 {
	if x <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

// short formats an axis value.
func short(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	case v >= 10 || v == 0:
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}
