package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ClusterFile describes a detached cluster (chatbench cluster up) so that
// another process can stop it (chatbench cluster down). It lives in the
// cluster's data dir as cluster.json.
type ClusterFile struct {
	Dir        string        `json:"dir"`
	GatewayURL string        `json:"gateway_url"`
	APIURL     string        `json:"api_url"`
	RedisAddr  string        `json:"redis_addr"`
	Brokers    string        `json:"brokers"`
	StoreAddr  string        `json:"store_addr"`
	Procs      []ClusterProc `json:"procs"` // in stop order
}

// ClusterProc is one process of a ClusterFile.
type ClusterProc struct {
	Name      string `json:"name"`
	PID       int    `json:"pid"`
	AdminAddr string `json:"admin_addr,omitempty"`
	APIURL    string `json:"api_url,omitempty"`
}

const clusterFileName = "cluster.json"

// WriteClusterFile records c in its data dir.
func WriteClusterFile(c *Cluster) (ClusterFile, error) {
	f := ClusterFile{Dir: c.dir, GatewayURL: c.GatewayURL, APIURL: c.APIURL, RedisAddr: c.RedisAddr}
	if c.Broker != nil {
		f.Brokers = c.Broker.Ready["kafka"]
	}
	if c.Store != nil {
		f.StoreAddr = c.Store.Ready["store"]
	}
	for _, group := range [][]*Proc{c.Gateways, c.coreProcs(), {c.Store, c.Broker}} {
		for _, p := range group {
			if p != nil {
				f.Procs = append(f.Procs, ClusterProc{Name: p.Name, PID: p.PID(), AdminAddr: p.AdminAddr, APIURL: p.Ready["api"]})
			}
		}
	}
	if pid := c.RedisPID(); pid != 0 {
		f.Procs = append(f.Procs, ClusterProc{Name: "redis", PID: pid})
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return f, err
	}
	return f, os.WriteFile(filepath.Join(c.dir, clusterFileName), append(b, '\n'), 0o644)
}

// StopClusterFile stops the processes a ClusterFile in dir lists: SIGTERM
// in order (gateways, cores, store and broker, Redis), each given up to
// grace to exit before SIGKILL. A pid that no longer runs a process of this
// cluster (its command line does not name dir) is skipped, so a stale file
// never signals an unrelated process. The file is removed at the end.
func StopClusterFile(dir string, grace time.Duration, log func(string)) error {
	path := filepath.Join(dir, clusterFileName)
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no cluster running in %s (no %s)", dir, clusterFileName)
		}
		return err
	}
	var f ClusterFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	abs, _ := filepath.Abs(dir)
	for _, p := range f.Procs {
		marks := []string{dir, abs}
		if p.Name == "redis" {
			// redis-server rewrites its command line to "redis-server ADDR".
			marks = []string{f.RedisAddr}
		}
		if !ownedBy(p.PID, marks...) {
			log(fmt.Sprintf("%s (pid %d): not running", p.Name, p.PID))
			continue
		}
		_ = syscall.Kill(p.PID, syscall.SIGTERM)
		deadline := time.Now().Add(grace)
		for alive(p.PID) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(p.PID) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
			log(fmt.Sprintf("%s (pid %d): killed after %s", p.Name, p.PID, grace))
			continue
		}
		log(fmt.Sprintf("%s (pid %d): stopped", p.Name, p.PID))
	}
	return os.Remove(path)
}

// ownedBy reports whether pid runs a command with one of marks as an
// argument or, after a space, inside one (chatd's --data-dir; the address
// in redis-server's rewritten title "redis-server ADDR").
func ownedBy(pid int, marks ...string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	for _, arg := range strings.Split(string(b), "\x00") {
		for _, m := range marks {
			if m != "" && (arg == m || strings.HasSuffix(arg, " "+m)) {
				return true
			}
		}
	}
	return false
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}
