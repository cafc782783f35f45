package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/chatd-dev/chatd/bench"
)

// cluster starts or stops a detached local cluster (make cluster,
// make cluster-down).
func cluster(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "up" && args[0] != "down") {
		return errors.New("usage: chatbench cluster up|down [flags]")
	}
	fs := flag.NewFlagSet("chatbench cluster "+args[0], flag.ExitOnError)
	var (
		dir      = fs.String("dir", "cluster-data", "data dir of the cluster (kept between runs: the broker's log and the store live there)")
		cores    = fs.Int("cores", 2, "core processes (one consumer group sharing the store process)")
		gateways = fs.Int("gateways", 2, "gateway processes sharing the gateway port with SO_REUSEPORT")
		gwAddr   = fs.String("gateway-addr", "127.0.0.1:8080", "the gateways' shared WebSocket listener")
		apiPort  = fs.Int("api-port", 8081, "core i serves the HTTP API on 127.0.0.1:api-port+i")
		chatd    = fs.String("chatd", "", "chatd binary (default: next to chatbench, then PATH)")
	)
	_ = fs.Parse(args[1:])
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if args[0] == "down" {
		return bench.StopClusterFile(abs, 15*time.Second, func(s string) { fmt.Println(s) })
	}
	if _, err := os.Stat(filepath.Join(abs, "cluster.json")); err == nil {
		return fmt.Errorf("a cluster is already running in %s (chatbench cluster down --dir %s)", abs, *dir)
	}
	bin, _, err := binaries(*chatd)
	if err != nil {
		return err
	}
	cl, err := bench.StartCluster(ctx, bench.ClusterConfig{ChatdBin: bin, Cores: *cores, GatewayProcs: *gateways,
		Dir: abs, GatewayAddr: *gwAddr, APIPort: *apiPort, Detach: true})
	if err != nil {
		return err
	}
	f, err := bench.WriteClusterFile(cl)
	if err != nil {
		cl.Stop()
		return err
	}
	fmt.Printf("cluster up in %s\n", abs)
	for _, p := range f.Procs {
		extra := ""
		if p.APIURL != "" {
			extra = " api " + p.APIURL
		}
		if p.AdminAddr != "" {
			extra += " admin http://" + p.AdminAddr
		}
		fmt.Printf("  %-10s pid %-7d%s\n", p.Name, p.PID, extra)
	}
	fmt.Printf("gateway %s (all gateways)\nbroker %s  store %s  redis %s\nlogs: %s/*.log\n",
		f.GatewayURL, f.Brokers, f.StoreAddr, f.RedisAddr, abs)
	fmt.Printf("try: ./bin/chat --ws %s --api %s --user alice --peer bob\n", f.GatewayURL, f.APIURL)
	return nil
}
