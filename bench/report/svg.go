package report

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Charts are written as SVG text: a white background, a title, a legend
// under it, grid lines at the ticks, labelled axes, one polyline per series.

const (
	svgW, svgH = 860, 480
	padL, padR = 80, 80 // room for the left and right axis labels
	padT, padB = 80, 56 // title and legend; x tick labels and axis label
	plotW      = svgW - padL - padR
	plotH      = svgH - padT - padB
)

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

type svgDoc struct{ b bytes.Buffer }

func newSVG(title string) *svgDoc {
	d := &svgDoc{}
	fmt.Fprintf(&d.b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n",
		svgW, svgH, svgW, svgH)
	fmt.Fprintf(&d.b, `<rect x="0" y="0" width="%d" height="%d" fill="white"/>`+"\n", svgW, svgH)
	d.text(svgW/2, 26, "middle", 16, "bold", title)
	return d
}

func (d *svgDoc) text(x, y float64, anchor string, size int, weight, s string, extra ...string) {
	fmt.Fprintf(&d.b, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d"`, x, y, anchor, size)
	if weight != "" {
		fmt.Fprintf(&d.b, ` font-weight="%s"`, weight)
	}
	for _, e := range extra {
		d.b.WriteString(" " + e)
	}
	d.b.WriteString(">")
	_ = xml.EscapeText(&d.b, []byte(s))
	d.b.WriteString("</text>\n")
}

func (d *svgDoc) line(x1, y1, x2, y2 float64, stroke string, width float64, dash string) {
	fmt.Fprintf(&d.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%.1f"`, x1, y1, x2, y2, stroke, width)
	if dash != "" {
		fmt.Fprintf(&d.b, ` stroke-dasharray="%s"`, dash)
	}
	d.b.WriteString("/>\n")
}

func (d *svgDoc) polyline(xs, ys []float64, color, dash string) {
	if len(xs) == 0 {
		return
	}
	fmt.Fprintf(&d.b, `<polyline fill="none" stroke="%s" stroke-width="2" stroke-linejoin="round"`, color)
	if dash != "" {
		fmt.Fprintf(&d.b, ` stroke-dasharray="%s"`, dash)
	}
	d.b.WriteString(` points="`)
	for i := range xs {
		if i > 0 {
			d.b.WriteByte(' ')
		}
		fmt.Fprintf(&d.b, "%.1f,%.1f", xs[i], ys[i])
	}
	d.b.WriteString("\"/>\n")
}

// legend draws the entries in rows under the title.
func (d *svgDoc) legend(names, colors, dashes []string) {
	x, y := float64(padL), 50.0
	for i, n := range names {
		w := 34 + 7*float64(len([]rune(n)))
		if x+w > svgW-padR && x > padL {
			x, y = padL, y+18
		}
		d.line(x, y-4, x+22, y-4, colors[i], 3, dashes[i])
		d.text(x+28, y, "start", 12, "", n)
		x += w + 16
	}
}

// frame draws the plot's border.
func (d *svgDoc) frame() {
	fmt.Fprintf(&d.b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333" stroke-width="1"/>`+"\n", padL, padT, plotW, plotH)
}

func (d *svgDoc) bytes() []byte {
	d.b.WriteString("</svg>\n")
	return d.b.Bytes()
}

// emptyNote marks a chart with nothing to draw.
func (d *svgDoc) emptyNote() {
	d.frame()
	d.text(padL+plotW/2, padT+plotH/2, "middle", 14, "", "no data")
}

// nines maps a percentile to the "nines" axis: 0 -> 0, 90 -> 1, 99 -> 2,
// 99.9 -> 3. 100 is +Inf.
func nines(p float64) float64 {
	if p >= 100 {
		return math.Inf(1)
	}
	if p <= 0 {
		return 0
	}
	return -math.Log10(1 - p/100)
}

// ninesLabel is the percentile at k nines: "0%", "90%", "99%", "99.9%"...
func ninesLabel(k int) string {
	switch k {
	case 0:
		return "0%"
	case 1:
		return "90%"
	case 2:
		return "99%"
	}
	return "99." + strings.Repeat("9", k-2) + "%"
}

// LatencySVG draws latency percentile curves: x is the percentile on a
// nines scale (0, 90, 99, 99.9, 99.99 equally spaced), y milliseconds.
// Points at 100% (the maximum) are drawn at the right edge.
func LatencySVG(title string, ls []LatencySeries) []byte {
	d := newSVG(title)
	maxN, maxMs := 4.0, 0.0
	for _, l := range ls {
		for _, p := range l.Points {
			if n := nines(p.Percentile); !math.IsInf(n, 1) && n > maxN {
				maxN = n
			}
			if !math.IsNaN(p.Ms) && !math.IsInf(p.Ms, 0) {
				maxMs = max(maxMs, p.Ms)
			}
		}
	}
	K := math.Min(math.Ceil(maxN-1e-9), 6)
	if !hasLatency(ls) {
		d.emptyNote()
		return d.bytes()
	}
	_, yHi, yStep := niceRange(0, maxMs, 6)
	xOf := func(p float64) float64 {
		n := math.Min(nines(p), K)
		return padL + n/K*plotW
	}
	yOf := func(v float64) float64 { return padT + plotH - v/yHi*plotH }

	// Grid and ticks.
	for k := 0; k <= int(K); k++ {
		x := padL + float64(k)/K*plotW
		d.line(x, padT, x, padT+plotH, "#e3e3e3", 1, "")
		d.line(x, padT+plotH, x, padT+plotH+5, "#333", 1, "")
		d.text(x, padT+plotH+19, "middle", 12, "", ninesLabel(k))
	}
	for _, p := range []float64{50, 75} { // minor, labelled: the body of the distribution
		x := xOf(p)
		d.line(x, padT, x, padT+plotH, "#f0f0f0", 1, "4,3")
		d.text(x, padT+plotH+19, "middle", 11, "", fmtNum(p)+"%", `fill="#666"`)
	}
	for v := 0.0; v <= yHi+yStep/2; v += yStep {
		y := yOf(v)
		d.line(padL, y, padL+plotW, y, "#e3e3e3", 1, "")
		d.line(padL-5, y, padL, y, "#333", 1, "")
		d.text(padL-8, y+4, "end", 12, "", fmtTick(v, yStep))
	}
	d.frame()
	d.text(padL+plotW/2, svgH-12, "middle", 13, "", "percentile")
	d.text(20, padT+plotH/2, "middle", 13, "", "latency (ms)", fmt.Sprintf(`transform="rotate(-90 20 %.1f)"`, float64(padT+plotH/2)))

	var names, colors, dashes []string
	for i, l := range ls {
		if len(l.Points) == 0 {
			continue
		}
		color := palette[i%len(palette)]
		var xs, ys []float64
		for _, p := range l.Points {
			if math.IsNaN(p.Ms) || math.IsInf(p.Ms, 0) {
				continue
			}
			xs = append(xs, xOf(p.Percentile))
			ys = append(ys, yOf(p.Ms))
		}
		d.polyline(xs, ys, color, "")
		for k := range xs {
			fmt.Fprintf(&d.b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`+"\n", xs[k], ys[k], color)
		}
		name := l.Name
		var extra []string
		if l.Count > 0 {
			extra = append(extra, "n="+fmtCount(float64(l.Count)))
		}
		if l.MaxMs > 0 {
			extra = append(extra, "max "+fmtMs(l.MaxMs)+" ms")
		}
		if len(extra) > 0 {
			name += " (" + strings.Join(extra, ", ") + ")"
		}
		names, colors, dashes = append(names, name), append(colors, color), append(dashes, "")
	}
	d.legend(names, colors, dashes)
	return d.bytes()
}

// TimeSeriesSVG draws series over time: x is seconds, series with Axis 0
// use the left y axis and series with Axis 1 the right one (drawn dashed).
func TimeSeriesSVG(title string, ss []TimeSeries) []byte {
	d := newSVG(title)
	xLo, xHi := math.Inf(1), math.Inf(-1)
	var yLo, yHi [2]float64
	var used [2]bool
	var unit [2]string
	for _, s := range ss {
		a := axisOf(s)
		for _, p := range s.Points {
			if !finite(p.X) || !finite(p.Y) {
				continue
			}
			xLo, xHi = math.Min(xLo, p.X), math.Max(xHi, p.X)
			yLo[a], yHi[a] = math.Min(yLo[a], p.Y), math.Max(yHi[a], p.Y)
			used[a] = true
		}
		if unit[a] == "" {
			unit[a] = s.Unit
		}
	}
	if !used[0] && !used[1] {
		d.emptyNote()
		return d.bytes()
	}
	xLo = math.Min(xLo, 0)
	xLo, xHi, xStep := niceRange(xLo, xHi, 8)
	var yStep [2]float64
	for a := range 2 {
		if used[a] {
			yLo[a], yHi[a], yStep[a] = niceRange(yLo[a], yHi[a], 6)
		}
	}
	xOf := func(x float64) float64 { return padL + (x-xLo)/(xHi-xLo)*plotW }
	yOf := func(a int, y float64) float64 { return padT + plotH - (y-yLo[a])/(yHi[a]-yLo[a])*plotH }

	for x := xLo; x <= xHi+xStep/2; x += xStep {
		px := xOf(x)
		d.line(px, padT, px, padT+plotH, "#e3e3e3", 1, "")
		d.line(px, padT+plotH, px, padT+plotH+5, "#333", 1, "")
		d.text(px, padT+plotH+19, "middle", 12, "", fmtTick(x, xStep))
	}
	grid := 0
	if !used[0] {
		grid = 1
	}
	for a := range 2 {
		if !used[a] {
			continue
		}
		for y := yLo[a]; y <= yHi[a]+yStep[a]/2; y += yStep[a] {
			py := yOf(a, y)
			if a == grid {
				d.line(padL, py, padL+plotW, py, "#e3e3e3", 1, "")
			}
			if a == 0 {
				d.line(padL-5, py, padL, py, "#333", 1, "")
				d.text(padL-8, py+4, "end", 12, "", fmtTick(y, yStep[a]))
			} else {
				d.line(padL+plotW, py, padL+plotW+5, py, "#333", 1, "")
				d.text(padL+plotW+8, py+4, "start", 12, "", fmtTick(y, yStep[a]))
			}
		}
	}
	d.frame()
	d.text(padL+plotW/2, svgH-12, "middle", 13, "", "time (s)")
	if used[0] {
		d.text(20, padT+plotH/2, "middle", 13, "", unit[0], fmt.Sprintf(`transform="rotate(-90 20 %.1f)"`, float64(padT+plotH/2)))
	}
	if used[1] {
		x := float64(svgW - 18)
		d.text(x, padT+plotH/2, "middle", 13, "", unit[1], fmt.Sprintf(`transform="rotate(90 %.1f %.1f)"`, x, float64(padT+plotH/2)))
	}

	var names, colors, dashes []string
	for i, s := range ss {
		a := axisOf(s)
		color := palette[i%len(palette)]
		dash := ""
		if a == 1 {
			dash = "7,4"
		}
		var xs, ys []float64
		for _, p := range s.Points {
			if finite(p.X) && finite(p.Y) {
				xs = append(xs, xOf(p.X))
				ys = append(ys, yOf(a, p.Y))
			}
		}
		if len(xs) == 0 {
			continue
		}
		d.polyline(xs, ys, color, dash)
		name := s.Name
		if used[0] && a == 1 {
			name += " (right axis)"
		}
		names, colors, dashes = append(names, name), append(colors, color), append(dashes, dash)
	}
	d.legend(names, colors, dashes)
	return d.bytes()
}

func axisOf(s TimeSeries) int {
	if s.Axis == 1 {
		return 1
	}
	return 0
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// niceRange widens [lo, hi] to round tick values, about n ticks apart.
func niceRange(lo, hi float64, n int) (nlo, nhi, step float64) {
	if hi <= lo {
		if hi == 0 {
			hi = 1
		} else {
			lo, hi = math.Min(0, lo), hi+math.Abs(hi)*0.1+1e-9
		}
	}
	step = niceNum((hi - lo) / float64(n-1))
	nlo = math.Floor(lo/step) * step
	nhi = math.Ceil(hi/step) * step
	if nhi == nlo {
		nhi = nlo + step
	}
	return nlo, nhi, step
}

// niceNum rounds x to 1, 2, 2.5 or 5 times a power of ten.
func niceNum(x float64) float64 {
	if x <= 0 || !finite(x) {
		return 1
	}
	e := math.Floor(math.Log10(x))
	f := x / math.Pow(10, e)
	var nf float64
	switch {
	case f <= 1:
		nf = 1
	case f <= 2:
		nf = 2
	case f <= 2.5:
		nf = 2.5
	case f <= 5:
		nf = 5
	default:
		nf = 10
	}
	return nf * math.Pow(10, e)
}

// fmtTick prints a tick value with the precision its step needs, and k/M/G
// suffixes on axes whose steps are large (connection counts: 200k, 1M; but
// 2000 MB stays 2000).
func fmtTick(v, step float64) string {
	if math.Abs(v) < step*1e-9 {
		return "0"
	}
	for _, u := range []struct {
		div, minStep float64
		suf          string
	}{{1e9, 1e8, "G"}, {1e6, 1e5, "M"}, {1e3, 1e4, "k"}} {
		if math.Abs(v) >= u.div && step >= u.minStep {
			s := trimFloat(v/u.div, step/u.div)
			if strings.Contains(s, ".") {
				s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
			}
			return s + u.suf
		}
	}
	return trimFloat(v, step)
}

func trimFloat(v, step float64) string {
	dec := 0
	if step < 1 {
		dec = int(math.Ceil(-math.Log10(step) - 1e-9))
		if s := step * math.Pow(10, float64(dec)); math.Abs(s-math.Round(s)) > 1e-6 {
			dec++ // 2.5, 0.25...
		}
	} else if math.Abs(step-math.Round(step)) > 1e-9 {
		dec = 1
	}
	return strconv.FormatFloat(v, 'f', dec, 64)
}

// fmtNum prints a number without trailing zeros.
func fmtNum(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// fmtCount prints a count with k/M suffixes.
func fmtCount(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}
