// Package report writes human-readable reports of benchmark runs: the
// result as JSON, a Markdown summary (command, machine, result table,
// latency percentiles, charts, notes) and SVG charts drawn as plain text,
// with no dependency: a latency percentile curve on a "nines" axis and time
// series with up to two y axes.
package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// Report is one run's report.
type Report struct {
	Title   string
	Command string // the command line that produced the run, to rerun it
	Result  any    // written as <name>.json and tabulated in the summary
	Series  []TimeSeries
	Latency []LatencySeries
	Notes   []string
}

// TimeSeries is one line of a time-series chart.
type TimeSeries struct {
	Name string // legend
	Unit string // y-axis label of its axis (the first series on an axis names it)
	// Axis is 0 for the left y axis, 1 for the right one.
	Axis int
	// Chart groups series into charts: series with the same Chart share
	// one SVG (<name>-series.svg for "", <name>-<chart>.svg otherwise).
	Chart  string
	Points []Point // X in seconds
}

// Point is one sample of a time series.
type Point struct{ X, Y float64 }

// LatencySeries is one curve of the latency chart.
type LatencySeries struct {
	Name   string
	Points []Percentile // in increasing Percentile order
	Count  int64        // samples behind the points (0: unknown)
	MaxMs  float64      // largest value, when known (shown in the legend and table)
}

// Percentile is the latency (ms) at or below which Percentile percent of
// the samples fall.
type Percentile struct {
	Percentile float64 // 0..100
	Ms         float64
}

// Percentiles sampled from histograms: dense at the tail, where the nines
// axis spreads them out.
var histPercentiles = []float64{0, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 92.5, 95, 96, 97, 98, 99,
	99.25, 99.5, 99.75, 99.9, 99.925, 99.95, 99.975, 99.99, 99.9925, 99.995, 99.9975, 99.999}

// FromHistogram turns a histogram into a latency series. unit is the
// duration of one histogram value (time.Microsecond for most of chatd's
// histograms). Percentiles beyond the histogram's resolution (more nines
// than 1/count supports) are left out.
func FromHistogram(name string, h *hdrhistogram.Histogram, unit time.Duration) LatencySeries {
	s := LatencySeries{Name: name, Count: h.TotalCount()}
	if s.Count == 0 {
		return s
	}
	scale := float64(unit) / float64(time.Millisecond)
	for _, p := range histPercentiles {
		if p > 0 && 100-p < 100/float64(s.Count) {
			break
		}
		s.Points = append(s.Points, Percentile{p, float64(h.ValueAtPercentile(p)) * scale})
	}
	s.MaxMs = float64(h.Max()) * scale
	return s
}

// FromSnapshot is FromHistogram for an exported histogram.
func FromSnapshot(name string, snap *hdrhistogram.Snapshot, unit time.Duration) LatencySeries {
	if snap == nil {
		return LatencySeries{Name: name}
	}
	return FromHistogram(name, hdrhistogram.Import(snap), unit)
}

// Machine describes where a run happened.
type Machine struct {
	NProc    int    `json:"nproc"`
	MemBytes int64  `json:"mem_bytes"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
	OSArch   string `json:"os_arch"`
	Hostname string `json:"hostname"`
}

// ThisMachine describes the machine this process runs on.
func ThisMachine() Machine {
	m := Machine{NProc: runtime.NumCPU(), Go: runtime.Version(), OSArch: runtime.GOOS + "/" + runtime.GOARCH}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	m.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
				if kb, err := strconv.ParseInt(v, 10, 64); err == nil {
					m.MemBytes = kb << 10
				}
			}
		}
	}
	return m
}

// Write writes r into dir (created if missing) and returns the paths it
// wrote:
//
//	<name>.json            r.Result as indented JSON
//	<name>.md              the summary, linking the charts
//	<name>-latency.svg     the latency chart, if r.Latency has points
//	<name>-series.svg      the time series with Chart "", if any
//	<name>-<chart>.svg     one chart per other Chart value
//
// name must be a plain file name stem.
func Write(dir, name string, r Report) (paths []string, err error) {
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return nil, fmt.Errorf("report: bad name %q", name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	write := func(file string, data []byte) error {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
		paths = append(paths, p)
		return nil
	}

	js, err := json.MarshalIndent(r.Result, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("report: result: %w", err)
	}
	if err := write(name+".json", append(js, '\n')); err != nil {
		return paths, err
	}

	type chart struct{ title, file string }
	var charts []chart
	if hasLatency(r.Latency) {
		f := name + "-latency.svg"
		if err := write(f, LatencySVG(r.Title+": latency", r.Latency)); err != nil {
			return paths, err
		}
		charts = append(charts, chart{"Latency", f})
	}
	groups, order := groupSeries(r.Series)
	for _, g := range order {
		f, title := name+"-series.svg", r.Title
		if g != "" {
			f, title = name+"-"+safeFile(g)+".svg", r.Title+": "+g
		}
		if err := write(f, TimeSeriesSVG(title, groups[g])); err != nil {
			return paths, err
		}
		label := "Over time"
		if g != "" {
			label = g
		}
		charts = append(charts, chart{label, f})
	}

	var md bytes.Buffer
	title := r.Title
	if title == "" {
		title = name
	}
	fmt.Fprintf(&md, "# %s\n\n", mdText(title))
	fmt.Fprintf(&md, "Written %s.\n\n", time.Now().UTC().Format(time.RFC3339))
	if r.Command != "" {
		fmt.Fprintf(&md, "Command:\n\n```\n%s\n```\n\n", r.Command)
	}
	m := ThisMachine()
	md.WriteString("## Machine\n\n| | |\n|---|---|\n")
	fmt.Fprintf(&md, "| CPUs (nproc) | %d |\n", m.NProc)
	fmt.Fprintf(&md, "| memory | %s |\n", humanBytes(m.MemBytes))
	fmt.Fprintf(&md, "| kernel | %s |\n", mdCell(m.Kernel))
	fmt.Fprintf(&md, "| Go | %s (%s) |\n", m.Go, m.OSArch)
	if m.Hostname != "" {
		fmt.Fprintf(&md, "| host | %s |\n", mdCell(m.Hostname))
	}
	md.WriteString("\n")

	if rows, err := flatten(js); err == nil && len(rows) > 0 {
		md.WriteString("## Result\n\n| field | value |\n|---|---|\n")
		for _, row := range rows {
			fmt.Fprintf(&md, "| %s | %s |\n", mdCell(row[0]), mdCell(row[1]))
		}
		fmt.Fprintf(&md, "\nRaw: [%s.json](%s.json)\n\n", name, name)
	}
	if hasLatency(r.Latency) {
		md.WriteString(latencyTable(r.Latency))
	}
	if len(charts) > 0 {
		md.WriteString("## Charts\n\n")
		for _, c := range charts {
			fmt.Fprintf(&md, "![%s](%s)\n\n", mdText(c.title), c.file)
		}
	}
	if len(r.Notes) > 0 {
		md.WriteString("## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&md, "- %s\n", strings.ReplaceAll(n, "\n", "\n  "))
		}
		md.WriteString("\n")
	}
	if err := write(name+".md", md.Bytes()); err != nil {
		return paths, err
	}
	return paths, nil
}

func hasLatency(ls []LatencySeries) bool {
	for _, l := range ls {
		if len(l.Points) > 0 {
			return true
		}
	}
	return false
}

func groupSeries(ss []TimeSeries) (map[string][]TimeSeries, []string) {
	groups := map[string][]TimeSeries{}
	var order []string
	for _, s := range ss {
		if len(s.Points) == 0 {
			continue
		}
		if _, ok := groups[s.Chart]; !ok {
			order = append(order, s.Chart)
		}
		groups[s.Chart] = append(groups[s.Chart], s)
	}
	return groups, order
}

func safeFile(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return b.String()
}

// latencyTable is the Markdown table of the usual percentiles per series.
func latencyTable(ls []LatencySeries) string {
	ps := []float64{50, 90, 99, 99.9, 99.99}
	var b strings.Builder
	b.WriteString("## Latency (ms)\n\n| series | samples |")
	for _, p := range ps {
		fmt.Fprintf(&b, " p%s |", fmtNum(p))
	}
	b.WriteString(" max |\n|---|---|")
	for range ps {
		b.WriteString("---|")
	}
	b.WriteString("---|\n")
	for _, l := range ls {
		if len(l.Points) == 0 {
			continue
		}
		count := "?"
		if l.Count > 0 {
			count = strconv.FormatInt(l.Count, 10)
		}
		fmt.Fprintf(&b, "| %s | %s |", mdCell(l.Name), count)
		for _, p := range ps {
			if v, ok := at(l.Points, p); ok {
				fmt.Fprintf(&b, " %s |", fmtMs(v))
			} else {
				b.WriteString(" – |")
			}
		}
		maxMs := l.MaxMs
		if last := l.Points[len(l.Points)-1]; maxMs == 0 && last.Percentile >= 100 {
			maxMs = last.Ms
		}
		if maxMs > 0 {
			fmt.Fprintf(&b, " %s |\n", fmtMs(maxMs))
		} else {
			b.WriteString(" – |\n")
		}
	}
	b.WriteString("\n")
	return b.String()
}

// at is the value at percentile p, when a point has it.
func at(pts []Percentile, p float64) (float64, bool) {
	for _, x := range pts {
		if math.Abs(x.Percentile-p) < 1e-9 {
			return x.Ms, true
		}
	}
	return 0, false
}

func fmtMs(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func humanBytes(n int64) string {
	if n <= 0 {
		return "unknown"
	}
	return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB"
}

// mdCell escapes text for a Markdown table cell.
func mdCell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// mdText escapes the characters that would start Markdown markup in a title.
func mdText(s string) string {
	return strings.NewReplacer("[", `\[`, "]", `\]`, "*", `\*`, "_", `\_`, "`", "\\`").Replace(s)
}

// flatten turns a JSON document into (path, value) rows in document order:
// objects are walked (keys joined with "."), arrays of up to 8 scalars are
// joined, longer or nested arrays are summarized by their length.
func flatten(js []byte) ([][2]string, error) {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var rows [][2]string
	var walk func(path string) error
	walk = func(path string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				for dec.More() {
					k, err := dec.Token()
					if err != nil {
						return err
					}
					key, _ := k.(string)
					p := key
					if path != "" {
						p = path + "." + key
					}
					if err := walk(p); err != nil {
						return err
					}
				}
				_, err := dec.Token() // '}'
				return err
			case '[':
				var items []string
				scalar, n := true, 0
				for dec.More() {
					var v json.RawMessage
					if err := dec.Decode(&v); err != nil {
						return err
					}
					n++
					v = bytes.TrimSpace(v)
					if len(v) > 0 && (v[0] == '{' || v[0] == '[') {
						scalar = false
					}
					if scalar && n <= 8 {
						items = append(items, scalarString(v))
					}
				}
				if _, err := dec.Token(); err != nil { // ']'
					return err
				}
				if scalar && n <= 8 {
					rows = append(rows, [2]string{path, "[" + strings.Join(items, ", ") + "]"})
				} else {
					rows = append(rows, [2]string{path, fmt.Sprintf("(%d items)", n)})
				}
				return nil
			}
			return errors.New("unexpected delimiter")
		case nil:
			rows = append(rows, [2]string{path, "null"})
		case json.Number:
			rows = append(rows, [2]string{path, fmtNumber(t)})
		case string:
			rows = append(rows, [2]string{path, t})
		case bool:
			rows = append(rows, [2]string{path, strconv.FormatBool(t)})
		}
		return nil
	}
	if err := walk(""); err != nil {
		return nil, err
	}
	for i := range rows {
		if rows[i][0] == "" {
			rows[i][0] = "value"
		}
	}
	return rows, nil
}

func scalarString(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return fmtNumber(json.Number(v))
}

// fmtNumber prints integers as they are and floats with up to 4 decimals.
func fmtNumber(n json.Number) string {
	if _, err := n.Int64(); err == nil {
		return n.String()
	}
	f, err := n.Float64()
	if err != nil {
		return n.String()
	}
	return strconv.FormatFloat(math.Round(f*1e4)/1e4, 'f', -1, 64)
}
