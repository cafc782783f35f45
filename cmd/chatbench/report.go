package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/chatd-dev/chatd/bench"
	"github.com/chatd-dev/chatd/bench/report"
)

// command is the command line that produced a run, for the reports.
func command(scenario string, args []string) string {
	return strings.Join(append([]string{"chatbench", scenario}, args...), " ")
}

func writeReport(dir, name string, r report.Report) {
	paths, err := report.Write(dir, name, r)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatbench: report:", err)
		return
	}
	fmt.Fprintln(os.Stderr, "reports:", strings.Join(paths, " "))
}

func writeDensityReport(dir string, args []string, res *bench.DensityResult, samples []bench.Sample) {
	est := report.TimeSeries{Name: "connections established", Unit: "connections"}
	rss := report.TimeSeries{Name: "gateway RSS", Unit: "MiB", Axis: 1}
	for _, s := range samples {
		est.Points = append(est.Points, report.Point{X: s.T, Y: float64(s.Established)})
		rss.Points = append(rss.Points, report.Point{X: s.T, Y: float64(s.GatewayRSS) / (1 << 20)})
	}
	writeReport(dir, "density", report.Report{
		Title:   fmt.Sprintf("Connection density: %d connections", res.ConnsTarget),
		Command: command("density", args),
		Result:  res,
		Series:  []report.TimeSeries{est, rss},
		Notes: []string{
			"Per-connection figures divide totals (every process's fixed cost included) by the established connections; *_marginal_* fields divide the growth since before the clients connected. Heap is read after a GC in every gateway.",
			"kernel_bytes_per_socket: growth of Slab plus TCP socket-buffer pages (/proc/net/sockstat) divided by two sockets per connection (client and server are both on this machine).",
			"gateway_anon_*: RssAnon, the gateways' private memory (Go heap, stacks, runtime); RSS also counts the pages of the chatd binary each process maps, which are one copy in the page cache shared by every chatd process.",
			"hold_cpu_percent: CPU used during the hold in percent of one CPU, per group of processes; machine is /proc/stat's busy time (kernel included), other is the machine minus the groups. hold_cpu_us_per_heartbeat divides the machine's busy CPU by the PINGs answered during the hold.",
			"hold_redis_*_per_heartbeat_interval: the Redis round trips and commands every chatd process counted (chatd_redis_*_total) during the hold, scaled to one heartbeat interval; absent without Redis.",
		},
	})
}

func writeLatencyReport(dir string, args []string, res *bench.LatencyResult, lat []report.LatencySeries) {
	p99 := report.TimeSeries{Name: "deliver P99", Unit: "ms", Chart: "timeline"}
	mx := report.TimeSeries{Name: "deliver max", Unit: "ms", Chart: "timeline"}
	for _, pt := range res.Timeline {
		p99.Points = append(p99.Points, report.Point{X: pt.T, Y: pt.P99ms})
		mx.Points = append(mx.Points, report.Point{X: pt.T, Y: pt.Maxms})
	}
	writeReport(dir, "latency", report.Report{
		Title:   fmt.Sprintf("1:1 latency at %.0f msg/s", res.Rate),
		Command: command("latency", args),
		Result:  res,
		Latency: lat,
		Series:  []report.TimeSeries{p99, mx},
		Notes: []string{
			"Open loop: latency is measured from each message's scheduled send time (coordinated omission corrected).",
			"The timeline groups messages by scheduled send time in 250 ms steps from the end of the warm-up.",
			"redis_*_per_msg: the Redis round trips and commands every chatd process counted (chatd_redis_*_total) over the whole run, warm-up and the pairs' connection setup included, divided by the messages sent; absent without Redis.",
			"sched: per group, runs_per_second counts how often one of its threads was put on a CPU (wake-ups and returns after preemption) and run_queue_wait_us_per_run how long each waited, runnable, for a CPU on average (/proc/<pid>/task/*/schedstat). Every hop of a message pays that wait.",
		},
	})
}

func writeStormReport(dir string, args []string, res *bench.StormResult, samples []bench.Sample) {
	est := report.TimeSeries{Name: "clients connected", Unit: "connections"}
	for _, s := range samples {
		est.Points = append(est.Points, report.Point{X: s.T, Y: float64(s.Established)})
	}
	writeReport(dir, "storm", report.Report{
		Title:   fmt.Sprintf("Reconnect storm: %d clients, gateways SIGKILLed", res.Clients),
		Command: command("storm", args),
		Result:  res,
		Series:  []report.TimeSeries{est},
		Notes: []string{
			"t = 0 is the SIGKILL of every gateway process. recovery_seconds: until every client is connected again and has its RESUME answered, and every witness receiver holds what was acknowledged before the kill.",
			"lost and duplicates are counted at the application level on SDK witness pairs that keep sending through the storm.",
		},
	})
}
