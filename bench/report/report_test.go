package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

type sampleResult struct {
	Conns       int              `json:"conns"`
	Established int64            `json:"established"`
	RSSMB       float64          `json:"gateway_rss_mb"`
	Failures    map[string]int64 `json:"failures"`
	Sources     []string         `json:"sources"`
	Inner       struct {
		P99 float64 `json:"p99_ms"`
	} `json:"inner"`
}

func sample() (Report, sampleResult) {
	res := sampleResult{Conns: 1_000_000, Established: 999_998, RSSMB: 5321.25,
		Failures: map[string]int64{"timeout:hello": 2}, Sources: []string{"127.0.0.2", "127.0.0.3"}}
	res.Inner.P99 = 12.5

	ack := hdrhistogram.New(1, 60_000_000, 3)
	del := hdrhistogram.New(1, 60_000_000, 3)
	for i := int64(1); i <= 100_000; i++ {
		_ = ack.RecordValue(500 + i%2000)               // µs
		_ = del.RecordValue(900 + (i%1000)*(i%1000)/50) // a longer tail
	}
	var conns, rss []Point
	for s := 0; s <= 300; s += 5 {
		conns = append(conns, Point{float64(s), math.Min(1e6, float64(s)*4000)})
		rss = append(rss, Point{float64(s), 200 + math.Min(1e6, float64(s)*4000)*0.005})
	}
	return Report{
		Title:   "Density: 1M connections <&> \"quoted\"",
		Command: "chatbench density --conns 1000000 --workers 52",
		Result:  res,
		Series: []TimeSeries{
			{Name: "connections established", Unit: "connections", Points: conns},
			{Name: "gateway RSS", Unit: "MB", Axis: 1, Points: rss},
			{Name: "cpu", Unit: "%", Chart: "CPU use", Points: []Point{{0, 10}, {10, 80}, {20, 55}}},
		},
		Latency: []LatencySeries{
			FromHistogram("ack", ack, time.Microsecond),
			FromSnapshot("deliver", del.Export(), time.Microsecond),
			{Name: "points", Points: []Percentile{{0, 1}, {50, 2}, {99, 9}, {100, 15}}},
		},
		Notes: []string{"gateway at 127.0.0.1:8080", "a | pipe"},
	}, res
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "reports")
	r, res := sample()
	paths, err := Write(dir, "density", r)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"density.json", "density-latency.svg", "density-series.svg", "density-cpu-use.svg", "density.md"}
	if len(paths) != len(want) {
		t.Fatalf("paths %v", paths)
	}
	for i, w := range want {
		if paths[i] != filepath.Join(dir, w) {
			t.Fatalf("path %d: %s, want %s", i, paths[i], w)
		}
		if st, err := os.Stat(paths[i]); err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v", w, err)
		}
	}

	// The JSON round-trips.
	b, err := os.ReadFile(filepath.Join(dir, "density.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back sampleResult
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, res) {
		t.Fatalf("round trip: %+v != %+v", back, res)
	}

	// The SVGs are well-formed XML and name their series.
	checkSVG(t, filepath.Join(dir, "density-latency.svg"), "ack (n=100.0k", "deliver", "points", "99.99%", "latency (ms)")
	checkSVG(t, filepath.Join(dir, "density-series.svg"), "connections established", "gateway RSS (right axis)", "MB", "time (s)", "1M")
	checkSVG(t, filepath.Join(dir, "density-cpu-use.svg"), "cpu")

	md, err := os.ReadFile(filepath.Join(dir, "density.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"# Density: 1M connections",
		"chatbench density --conns 1000000 --workers 52",
		"| CPUs (nproc) |", "| memory |", "| kernel |", "| Go | go",
		"| conns | 1000000 |", "| gateway_rss_mb | 5321.25 |", "| failures.timeout:hello | 2 |",
		"| sources | [127.0.0.2, 127.0.0.3] |", "| inner.p99_ms | 12.5 |",
		"![Latency](density-latency.svg)", "![Over time](density-series.svg)", "![CPU use](density-cpu-use.svg)",
		"| ack | 100000 |", "| points | ? | 2.00 | – | 9.00 | – | – | 15.0 |", "- a | pipe",
	} {
		if !bytes.Contains(md, []byte(s)) {
			t.Errorf("summary lacks %q:\n%s", s, md)
		}
	}
}

func checkSVG(t *testing.T, path string, names ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(b))
	var text strings.Builder
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: not well-formed: %v", path, err)
		}
		switch x := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = x.Name.Local
			}
		case xml.CharData:
			text.Write(x)
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root %q", path, root)
	}
	for _, n := range names {
		if !strings.Contains(text.String(), n) {
			t.Errorf("%s: no %q in its text", path, n)
		}
	}
}

func TestWriteEmpty(t *testing.T) {
	dir := t.TempDir()
	paths, err := Write(dir, "x", Report{Result: 42})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 2 {
		t.Fatalf("paths %v: want only json and md", paths)
	}
	if _, err := Write(dir, "../x", Report{}); err == nil {
		t.Fatal("a path as name was accepted")
	}
	// Charts with nothing to draw are still valid SVG.
	for _, b := range [][]byte{LatencySVG("t", nil), TimeSeriesSVG("t", []TimeSeries{{Name: "nan", Points: []Point{{math.NaN(), 1}}}})} {
		if err := xml.Unmarshal(b, new(struct{})); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFromHistogramSkipsUnsupportedNines(t *testing.T) {
	h := hdrhistogram.New(1, 1000, 3)
	for i := int64(1); i <= 100; i++ {
		_ = h.RecordValue(i * 1000 / 100)
	}
	s := FromHistogram("x", h, time.Millisecond)
	last := s.Points[len(s.Points)-1].Percentile
	if last > 99 || last < 98 {
		t.Fatalf("100 samples support up to 99%%, got points to %v", last)
	}
	if s.MaxMs != 1000 || s.Count != 100 {
		t.Fatalf("max %v count %d", s.MaxMs, s.Count)
	}
}

func TestTicks(t *testing.T) {
	lo, hi, step := niceRange(0, 1_000_000, 6)
	if lo != 0 || hi != 1_000_000 || step != 200_000 {
		t.Fatalf("niceRange: %v %v %v", lo, hi, step)
	}
	for _, tc := range []struct {
		v, step float64
		want    string
	}{
		{0, 1, "0"}, {200_000, 200_000, "200k"}, {1_000_000, 200_000, "1M"}, {1_250_000, 250_000, "1.25M"},
		{2.5, 0.5, "2.5"}, {0.25, 0.25, "0.25"}, {12, 2, "12"}, {1500, 500, "1500"}, {6000, 2000, "6000"}, {30_000, 10_000, "30k"},
	} {
		if got := fmtTick(tc.v, tc.step); got != tc.want {
			t.Errorf("fmtTick(%v, %v) = %q, want %q", tc.v, tc.step, got, tc.want)
		}
	}
	if nines(99.9) < 2.999 || nines(99.9) > 3.001 || nines(0) != 0 || !math.IsInf(nines(100), 1) {
		t.Fatal("nines")
	}
}
