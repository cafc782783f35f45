package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/chatd-dev/chatd/bench"
	"github.com/chatd-dev/chatd/bench/report"
)

// group runs `chatbench fanout` (receipts false) and `chatbench receipts`
// (receipts true): one group, every member online, the same code.
func group(ctx context.Context, scenario string, args []string, receipts bool) error {
	fs := flag.NewFlagSet("chatbench "+scenario, flag.ExitOnError)
	sf := addServerFlags(fs)
	defRate, defRedis := 20.0, false
	if receipts {
		defRate, defRedis = 10, true
	}
	var (
		size      = fs.Int("group-size", 1024, "members, every one online with one connection")
		rate      = fs.Float64("rate", defRate, "group messages per second (open loop); each is paired with a 1:1 message from the same sender for the ACK comparison")
		senders   = fs.Int("senders", 0, "members that send, in turn (0: enough that each sends at most 15 a second)")
		duration  = fs.Duration("duration", 10*time.Second, "measured sending time")
		warmup    = fs.Duration("warmup", 2*time.Second, "sending time before measuring")
		body      = fs.Int("body", 32, "message body bytes (at least 8)")
		withRcpt  = fs.Bool("receipts", receipts, "members acknowledge like the SDK: one delivered and one read receipt per --read-every, up to the latest seq")
		readEvery = fs.Duration("read-every", time.Second, "receipt interval per member")
		redis     = fs.Bool("redis", defRedis, "run the core in its own process with a redis-server for the registry, router and receipt counters (counts Redis commands per message); false: one all-in-one chatd")
		outDir    = fs.String("out", "bench/out", "directory for the reports (JSON, Markdown, SVG)")
		asJSON    = fs.Bool("json", false, "print the result as one JSON object on the last line")
	)
	_ = fs.Parse(args)
	cfg := bench.GroupConfig{
		GroupSize: *size, Senders: *senders, Rate: *rate, Duration: *duration, Warmup: *warmup,
		BodySize: *body, Receipts: *withRcpt, ReadEvery: *readEvery,
		Log: func(s string) { fmt.Fprintln(os.Stderr, s) },
	}
	if *sf.server != "" {
		if *sf.api == "" {
			return fmt.Errorf("--api is required with --server")
		}
		// A running chatd's counters are not ours to read: store writes and
		// Redis commands are reported as 0.
		cfg.GatewayURL, cfg.APIURL = *sf.server, *sf.api
	} else {
		bin, err := bench.FindChatd(*sf.chatd)
		if err != nil {
			return err
		}
		cl, err := bench.StartCluster(ctx, bench.ClusterConfig{ChatdBin: bin, GatewayProcs: 1, Split: *redis})
		if err != nil {
			return err
		}
		defer cl.Stop()
		cfg.GatewayURL, cfg.APIURL = cl.GatewayURL, cl.APIURL
		cfg.Counters = func(context.Context) (bench.ServerCounters, error) {
			var c bench.ServerCounters
			for _, p := range cl.Procs() {
				if v, err := p.Metric("chatd_receipt_pointer_writes_total"); err == nil {
					c.ReceiptStoreWrites += v
				}
				if v, err := p.Metric("chatd_receipt_pointers_held"); err == nil {
					c.ReceiptsHeld += v
				}
			}
			if cl.RedisAddr != "" {
				total, byName, err := bench.RedisCommands(cl.RedisAddr)
				if err != nil {
					return c, fmt.Errorf("redis counters: %w", err)
				}
				c.RedisCommands, c.RedisByName = total, byName
			}
			return c, nil
		}
	}
	res, err := bench.RunGroup(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Printf("%s: %d-member group, all online, %d sender(s), %.0f msg/s, %s measured\n", scenario, res.GroupSize, res.Senders, res.Rate, *duration)
	fmt.Printf("  sent %d  acked %d  deliveries %d (%d per message)  lost %d  duplicates %d  errors %v\n",
		res.Sent, res.Acked, res.Deliveries, res.Recipients, res.Lost, res.Duplicates, res.Errors)
	fmt.Printf("  last member has it  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms   (each delivery p50 %.2f p99 %.2f)  %.0f deliveries/s\n",
		res.DeliverLastP50ms, res.DeliverLastP99ms, res.DeliverLastMaxms, res.DeliverP50ms, res.DeliverP99ms, res.DeliveriesPerSec)
	fmt.Printf("  send->ack  group p50 %.2f p99 %.2f ms   1:1 p50 %.2f p99 %.2f ms   (p99 ratio %.2f)\n",
		res.AckP50ms, res.AckP99ms, res.DirectAckP50ms, res.DirectAckP99ms, res.AckP99VsDirect)
	if cfg.Receipts {
		fmt.Printf("  receipts: %d frames sent, %d received (%.1f per message; naive %.0f); store writes %.1f per message (naive %.0f); Redis commands %.1f per message\n",
			res.ReceiptFramesSent, res.ReceiptFramesReceived, res.ReceiptFramesPerMsg, res.NaiveReceiptFramesPerMsg,
			res.ReceiptStoreWritesPerMsg, res.NaiveStoreWritesPerMsg, res.RedisCommandsPerMsg)
		if len(res.RedisPerMsgByName) > 0 {
			fmt.Printf("  Redis commands per message by command: %v\n", res.RedisPerMsgByName)
		}
	}
	notes := []string{
		"Open loop: latency is measured from each message's scheduled send time (coordinated omission corrected).",
		"deliver_last: per group message, until the last of its recipients (every member but the sender) had it; lost counts every recipient that never got one.",
		"ack_p99_vs_direct compares group sends with 1:1 sends made by the same senders at the same instants.",
	}
	if cfg.Receipts {
		notes = append(notes,
			"Receipts are counted over every group message, warm-up included: store writes are chatd_receipt_pointer_writes_total growth, Redis commands the growth of INFO commandstats calls (everything: registry, routing, counters), from the first group message until the last receipt is handled.",
			"Naive store writes: one write per receipt event (a delivered and a read from every recipient for every message). Naive frames: every receipt event relayed to every other member.")
	}
	writeReport(*outDir, scenario, report.Report{
		Title:   fmt.Sprintf("%s: %d-member group at %.0f msg/s", scenario, res.GroupSize, res.Rate),
		Command: command(scenario, args),
		Result:  res,
		Latency: []report.LatencySeries{
			report.FromHistogram("send->last member", res.DeliverLastHist, time.Microsecond),
			report.FromHistogram("send->each delivery", res.DeliverHist, time.Microsecond),
			report.FromHistogram("send->ack (group)", res.AckHist, time.Microsecond),
		},
		Notes: notes,
	})
	if *asJSON {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
	}
	if res.Lost > 0 || res.Duplicates > 0 {
		return fmt.Errorf("%d deliveries lost, %d duplicated", res.Lost, res.Duplicates)
	}
	return nil
}
