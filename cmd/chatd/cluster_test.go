package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bench"
	"github.com/chatd-dev/chatd/core/api"
	"github.com/chatd-dev/chatd/sdk"
	"github.com/chatd-dev/chatd/wire"
)

// These tests run the local cluster as separate processes (bench.Cluster,
// the topology of `make cluster`): a broker, a store, a redis-server, two
// cores in one consumer group and two gateways sharing one port with
// SO_REUSEPORT. Processes are SIGKILLed or SIGSTOPped as the failure needs.

type cluster struct {
	*bench.Cluster
}

func (c cluster) wsURL() string  { return c.GatewayURL }
func (c cluster) apiURL() string { return c.APIURL }

func startCluster(t *testing.T, extra ...string) cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	cl, err := bench.StartCluster(ctx, bench.ClusterConfig{ChatdBin: chatdBin, Cores: 2, GatewayProcs: 2,
		ExtraArgs: append([]string{"--partitions", "4"}, extra...), Log: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	// Both cores own partitions before traffic starts (a joining member
	// gets its share at the next rebalance).
	deadline := time.Now().Add(waitFor)
	for _, p := range cl.Cores {
		for {
			n, _ := p.Metric(`chatd_kafka_assigned_partitions{group="chatd-messages"}`)
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s owns no chatd-messages partition", p.Name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return cluster{cl}
}

// connectionsOpen returns each gateway's open connections (0 for a dead
// one).
func (c cluster) connectionsOpen(t *testing.T) []int {
	t.Helper()
	out := make([]int, len(c.Gateways))
	for i, g := range c.Gateways {
		select {
		case <-g.Exited():
			continue
		default:
		}
		v, err := g.Metric("chatd_gateway_connections_open")
		if err != nil {
			t.Fatalf("gateway %d metrics: %v", i, err)
		}
		out[i] = int(v)
	}
	return out
}

// connectOn connects user's device to gateway want: SO_REUSEPORT picks the
// gateway by a hash of the client's address, so connections are opened
// (and the ones landing elsewhere closed) until one lands there.
func (c cluster) connectOn(t *testing.T, want int, user string) (*sdk.Client, *recorder) {
	t.Helper()
	for attempt := 0; attempt < 64; attempt++ {
		before := c.connectionsOpen(t)
		cl, r := newClient(t, c, user, fmt.Sprintf("dev%d", attempt), nil)
		r.waitUntil(t, user+" connected", func() bool { return r.connected > 0 })
		var after []int
		deadline := time.Now().Add(waitFor)
		for {
			after = c.connectionsOpen(t)
			grown := 0
			for i := range after {
				grown += after[i] - before[i]
			}
			if grown >= 1 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if after[want] > before[want] {
			return cl, r
		}
		cl.Close()
		// Wait until the closed connection is gone, so the counts stay
		// exact for the next attempt.
		for i := 0; i < 500; i++ {
			now := c.connectionsOpen(t)
			same := true
			for j := range now {
				same = same && now[j] == before[j]
			}
			if same {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Fatalf("no connection of %s landed on gateway %d", user, want)
	return nil, nil
}

// checkConversation asserts that the store holds exactly ids (each once,
// seqs 1..n without gaps), that every ack names the seq that stores its
// message, and that the recipient's app saw the same messages once, in seq
// order.
func checkConversation(t *testing.T, ep endpoint, conv uint64, ids []string, ar, br *recorder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	// History is read as the sender (a member) from another device.
	tok, err := sdk.DevToken(ctx, ep.apiURL(), "alice", "check")
	if err != nil {
		t.Fatal(err)
	}
	stored := history(t, ep, tok, conv)
	bySeq := map[uint64]string{}
	seen := map[string]bool{}
	for i, m := range stored {
		if m.Seq != uint64(i+1) {
			t.Fatalf("stored seq %d at position %d: gap or reuse", m.Seq, i)
		}
		if seen[m.ClientMsgID] {
			t.Fatalf("client_msg_id %s stored twice", m.ClientMsgID)
		}
		seen[m.ClientMsgID] = true
		bySeq[m.Seq] = m.ClientMsgID
	}
	if len(stored) != len(ids) {
		t.Fatalf("stored %d messages, want %d", len(stored), len(ids))
	}
	ar.mu.Lock()
	for _, id := range ids {
		a, ok := ar.acks[id]
		if !ok {
			t.Fatalf("no ack for %s", id)
		}
		if bySeq[a.Seq] != id {
			t.Fatalf("ack for %s says seq %d, which stores %s", id, a.Seq, bySeq[a.Seq])
		}
	}
	ar.mu.Unlock()
	br.mu.Lock()
	defer br.mu.Unlock()
	if len(br.msgs) != len(ids) {
		t.Fatalf("recipient's app got %d messages, want %d (duplicates?)", len(br.msgs), len(ids))
	}
	for i, m := range br.msgs {
		if m.Seq != uint64(i+1) || m.ClientMsgID != bySeq[m.Seq] {
			t.Fatalf("recipient's message %d: seq %d %s, want seq %d %s", i, m.Seq, m.ClientMsgID, i+1, bySeq[uint64(i+1)])
		}
	}
}

// alicePlusBob connects Alice and Bob (on whichever gateways the kernel
// picks) and opens their conversation.
func alicePlusBob(t *testing.T, c cluster) (alice *sdk.Client, ar, br *recorder, conv uint64) {
	t.Helper()
	alice, ar = newClient(t, c, "alice", "phone", nil)
	_, br = newClient(t, c, "bob", "phone", nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	cv, err := alice.OpenDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	return alice, ar, br, cv.ID
}

// sendAll sends n messages from alice in conv, with fn called before
// message i (for injecting failures), and returns their client_msg_ids.
func sendAll(t *testing.T, alice *sdk.Client, conv uint64, n int, fn func(i int)) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var ids []string
	for i := 0; i < n; i++ {
		if fn != nil {
			fn(i)
		}
		id, err := alice.Send(ctx, conv, wire.KindText, []byte(fmt.Sprintf("message %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		time.Sleep(3 * time.Millisecond)
	}
	return ids
}

// TestClusterAcrossGateways: Alice on gateway 0, Bob on gateway 1. Order
// is kept and every receipt arrives.
func TestClusterAcrossGateways(t *testing.T) {
	c := startCluster(t)
	alice, ar := c.connectOn(t, 0, "alice")
	bob, br := c.connectOn(t, 1, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	conv, err := alice.OpenDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	const total = 100
	ids := sendAll(t, alice, conv.ID, total, nil)
	ar.waitUntil(t, "every ack", func() bool { return len(ar.acks) == total })
	br.waitUntil(t, "every message at bob", func() bool { return len(br.msgs) >= total })
	checkConversation(t, c, conv.ID, ids, ar, br)
	// Bob's SDK reports delivery by itself; reading is the app's call.
	ar.waitUntil(t, "delivered receipt", func() bool { return ar.receipts[wire.ReceiptDelivered] == total })
	bob.MarkRead(conv.ID, total)
	ar.waitUntil(t, "read receipt", func() bool { return ar.receipts[wire.ReceiptRead] == total })

	// Presence across processes: Bob's gateway registered him in Redis, a
	// core's API answers Alice; when Bob leaves he is offline, last seen
	// when he left.
	tok, err := sdk.DevToken(ctx, c.APIURL, "alice", "web")
	if err != nil {
		t.Fatal(err)
	}
	// Receipt counts from the core's fanout, in Redis, read by a core's API.
	deadline := time.Now().Add(waitFor)
	for {
		var rc api.ReceiptsJSON
		getJSON(t, fmt.Sprintf("%s/api/v1/conversations/%d/receipts?seq=%d", c.APIURL, conv.ID, total), tok, &rc)
		if len(rc.Receipts) == 1 && rc.Receipts[0] == (api.ReceiptCountJSON{Seq: total, Delivered: 1, Read: 1}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receipt counts %+v, want read by 1", rc)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p := presenceOf(t, c.APIURL, tok, "bob"); !p.Online || p.Hidden {
		t.Fatalf("bob connected: %+v", p)
	}
	left := time.Now().UnixMilli()
	bob.Close()
	deadline = time.Now().Add(waitFor)
	for {
		p := presenceOf(t, c.APIURL, tok, "bob")
		if !p.Online {
			if p.LastSeenMS < left {
				t.Fatalf("bob gone: %+v, want last seen after %d", p, left)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob still online after closing: %+v", p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// presenceOf asks the API for user's presence with tok.
func presenceOf(t *testing.T, apiURL, tok, user string) api.PresenceJSON {
	t.Helper()
	var out struct {
		Presence []api.PresenceJSON `json:"presence"`
	}
	getJSON(t, apiURL+"/api/v1/presence?user="+user, tok, &out)
	if len(out.Presence) != 1 {
		t.Fatalf("presence of %s: %+v", user, out)
	}
	return out.Presence[0]
}

// getJSON GETs url with tok and decodes a 200 answer into v.
func getJSON(t *testing.T, url, tok string, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestClusterCoreKill: a core is SIGKILLed mid-traffic. The other core
// takes its partitions (after the group's session timeout) from the shared
// store: nothing lost, nothing duplicated, no seq reused or skipped, in
// every conversation.
func TestClusterCoreKill(t *testing.T) {
	coreFailure(t, func(c cluster) { c.Cores[1].Kill() })
}

// TestClusterCoreZombie: a core is paused (SIGSTOP) mid-traffic past the
// group's session timeout, so the other core takes its partitions, and is
// then resumed while traffic goes on. The paused core may wake up holding a
// polled batch and a stale seq cache; the store refuses its commit
// (store.ErrSeqConflict) and it redoes the batch. Whatever the timing: no
// stored message is overwritten (each ACK names the seq that stores it),
// nothing lost or duplicated, no seq reused or skipped.
func TestClusterCoreZombie(t *testing.T) {
	coreFailure(t, func(c cluster) {
		if err := c.Cores[1].Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		resumed := false
		defer func() {
			if !resumed {
				_ = c.Cores[1].Signal(syscall.SIGCONT)
			}
		}()
		// Core 0 owns every partition once the paused member's session
		// expired.
		deadline := time.Now().Add(waitFor)
		for {
			n, _ := c.Cores[0].Metric(`chatd_kafka_assigned_partitions{group="chatd-messages"}`)
			if n == 4 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("core 0 owns %v of 4 partitions while core 1 is paused", n)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := c.Cores[1].Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		resumed = true
	})
}

// coreFailure sends in several conversations, so both cores own some, and
// calls fail a third of the way through (core 0 serves the API the clients
// use, so fail acts on core 1); then it checks every conversation.
func coreFailure(t *testing.T, fail func(c cluster)) {
	c := startCluster(t)
	alice, ar := newClient(t, c, "alice", "phone", nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	const peers, perPeer = 6, 60
	type peer struct {
		conv uint64
		r    *recorder
		ids  []string
	}
	ps := make([]*peer, peers)
	for i := range ps {
		name := fmt.Sprintf("peer%d", i)
		_, r := newClient(t, c, name, "phone", nil)
		conv, err := alice.OpenDirect(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = &peer{conv: conv.ID, r: r}
	}
	for k := 0; k < perPeer; k++ {
		if k == perPeer/3 {
			ar.waitUntil(t, "some acks", func() bool { return len(ar.acks) >= peers*perPeer/6 })
			// The core that fails owns conversations with traffic.
			if n, err := c.Cores[1].Metric("chatd_messages_acked_total"); err != nil || n == 0 {
				t.Fatalf("core 1 acked %v messages (%v): it owns none of the conversations", n, err)
			}
			fail(c)
		}
		for _, p := range ps {
			id, err := alice.Send(ctx, p.conv, wire.KindText, []byte(fmt.Sprintf("message %d", k)))
			if err != nil {
				t.Fatal(err)
			}
			p.ids = append(p.ids, id)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ar.waitUntil(t, "every ack", func() bool { return len(ar.acks) == peers*perPeer })
	for _, p := range ps {
		p.r.waitUntil(t, "every message", func() bool { return len(p.r.msgs) >= perPeer })
	}
	// Alice's acks are shared across conversations; checkConversation
	// looks each id up.
	for _, p := range ps {
		checkConversation(t, c, p.conv, p.ids, ar, p.r)
	}
	for i, p := range c.Cores {
		if n, err := p.Metric("chatd_core_seq_conflicts_total"); err == nil {
			t.Logf("core %d: %v batches refused by the seq fence", i, n)
		}
	}
}

// TestClusterGatewayKill: the gateway holding Bob is SIGKILLed while Alice
// (on the other one) sends. Bob's client reconnects, lands on the surviving
// gateway (same port), resumes and misses nothing; the dead gateway's
// registry lease expires.
func TestClusterGatewayKill(t *testing.T) {
	c := startCluster(t, "--lease-ttl", "3s")
	alice, ar := c.connectOn(t, 0, "alice")
	_, br := c.connectOn(t, 1, "bob")
	// Carol, on the gateway that dies, never comes back (a raw client that
	// does not reconnect): her route must leave the registry by itself.
	carol := c.rawOn(t, 1, "carol")
	defer carol.Close()
	if !redisExists(t, c.RedisAddr, "chatd:u:carol") {
		t.Fatal("carol's route is not in the registry")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	conv, err := alice.OpenDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	ids := sendAll(t, alice, conv.ID, 150, func(i int) {
		if i == 50 {
			br.waitUntil(t, "some messages", func() bool { return len(br.msgs) >= 20 })
			c.Gateways[1].Kill()
		}
	})
	ar.waitUntil(t, "every ack", func() bool { return len(ar.acks) == len(ids) })
	br.waitUntil(t, "every message at bob", func() bool { return len(br.msgs) >= len(ids) })
	checkConversation(t, c, conv.ID, ids, ar, br)
	br.mu.Lock()
	reconnected := br.connected
	br.mu.Unlock()
	if reconnected < 2 {
		t.Fatalf("bob connected %d times, want a reconnect", reconnected)
	}
	if n := c.connectionsOpen(t); n[0] < 2 {
		t.Fatalf("surviving gateway holds %d connections, want alice and bob", n[0])
	}
	// The killed gateway's lease key expires by itself (PX), so its routes
	// stop being live.
	leaseKey := "chatd:lease:" + gatewayID(c, 1)
	deadline := time.Now().Add(waitFor)
	for redisExists(t, c.RedisAddr, leaseKey) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists", leaseKey)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Carol's route pointed at the dead gateway. A lookup (a message to
	// her) finds it dead and deletes it: her registry entry is gone, and
	// with it her online presence.
	cc, err := alice.OpenDirect(ctx, "carol")
	if err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(waitFor)
	for i := 0; redisExists(t, c.RedisAddr, "chatd:u:carol"); i++ {
		if time.Now().After(deadline) {
			t.Fatal("carol's route on the killed gateway is still in the registry")
		}
		if _, err := alice.Send(ctx, cc.ID, wire.KindText, fmt.Appendf(nil, "to carol %d", i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rawOn connects user with a raw client (bench.Conn: no reconnect) that
// lands on gateway want (the kernel picks the gateway; it retries).
func (c cluster) rawOn(t *testing.T, want int, user string) *bench.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for attempt := 0; attempt < 64; attempt++ {
		before := c.connectionsOpen(t)
		device := fmt.Sprintf("raw%d", attempt)
		tok, err := sdk.DevToken(ctx, c.apiURL(), user, device)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := bench.Dial(ctx, c.wsURL(), tok, device)
		if err != nil {
			t.Fatal(err)
		}
		after := c.connectionsOpen(t)
		if after[want] > before[want] {
			return conn
		}
		conn.Close()
		for i := 0; i < 500 && fmt.Sprint(c.connectionsOpen(t)) != fmt.Sprint(before); i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Fatalf("no connection of %s landed on gateway %d", user, want)
	return nil
}

// TestClusterRedisKill: Redis is SIGKILLed. Sends are still accepted and
// persisted (their ACKs ride Redis too, so the SDK resends; the core
// dedupes); when Redis is back, empty, the gateways re-register and live
// delivery resumes without a restart; Bob catches up on the rest.
func TestClusterRedisKill(t *testing.T) {
	c := startCluster(t)
	alice, ar, br, conv := alicePlusBob(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ids := sendAll(t, alice, conv, 20, nil)
	br.waitUntil(t, "first messages", func() bool { return len(br.msgs) == 20 })

	c.KillRedis()
	ids = append(ids, sendAll(t, alice, conv, 20, nil)...)
	// Persisted while Redis is down: the store has all 40.
	tok, err := sdk.DevToken(ctx, c.APIURL, "alice", "check")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitFor)
	for len(history(t, c, tok, conv)) < 40 {
		if time.Now().After(deadline) {
			t.Fatal("sends made while Redis was down were not persisted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.RestartRedis(ctx); err != nil {
		t.Fatal(err)
	}
	// Live delivery comes back once the gateways have re-registered (they
	// do as soon as their subscriptions return): send until Bob gets one
	// live. His SDK then sees the gap and fetches what he missed.
	deadline = time.Now().Add(waitFor)
	for {
		ids = append(ids, sendAll(t, alice, conv, 1, nil)...)
		br.mu.Lock()
		got := len(br.msgs) > 20
		br.mu.Unlock()
		if got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("live delivery did not resume after Redis came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	ar.waitUntil(t, "every ack", func() bool { return len(ar.acks) == len(ids) })
	br.waitUntil(t, "every message at bob", func() bool { return len(br.msgs) >= len(ids) })
	checkConversation(t, c, conv, ids, ar, br)
}

// TestClusterBrokerOutage: the Kafka broker stops answering (SIGSTOP). The
// gateways hold up to --produce-buffer records each and answer every SEND
// beyond that with a retryable ERROR unavailable at once; the SDK resends
// with the same client_msg_id, and once the broker is back each message is
// stored exactly once.
func TestClusterBrokerOutage(t *testing.T) {
	c := startCluster(t, "--produce-buffer", "4")
	alice, ar, br, conv := alicePlusBob(t, c)
	ids := sendAll(t, alice, conv, 10, nil)
	ar.waitUntil(t, "first acks", func() bool { return len(ar.acks) == 10 })

	if err := c.Broker.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = c.Broker.Signal(syscall.SIGCONT)
		}
	}()
	ids = append(ids, sendAll(t, alice, conv, 30, nil)...)
	// The bound was hit: some SEND got ERROR unavailable.
	deadline := time.Now().Add(waitFor)
	for produceErrors(t, c) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no SEND was refused while the broker was stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // an outage "for a while": the SDK retries meanwhile
	if err := c.Broker.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	ar.waitUntil(t, "every ack", func() bool { return len(ar.acks) == len(ids) })
	br.waitUntil(t, "every message at bob", func() bool { return len(br.msgs) >= len(ids) })
	checkConversation(t, c, conv, ids, ar, br)
}

// TestClusterStoreKill: the store process is SIGKILLed while Alice sends,
// and restarted on the same data dir. The cores retry their batches until
// it is back; every message is stored once, acknowledged and delivered in
// order.
func TestClusterStoreKill(t *testing.T) {
	c := startCluster(t)
	alice, ar, br, conv := alicePlusBob(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ids := sendAll(t, alice, conv, 100, func(i int) {
		switch i {
		case 30:
			ar.waitUntil(t, "some acks", func() bool { return len(ar.acks) >= 10 })
			c.Store.Kill()
		case 60:
			if err := c.Restart(ctx, c.Store); err != nil {
				t.Fatal(err)
			}
		}
	})
	ar.waitUntil(t, "every ack", func() bool { return len(ar.acks) == len(ids) })
	br.waitUntil(t, "every message at bob", func() bool { return len(br.msgs) >= len(ids) })
	checkConversation(t, c, conv, ids, ar, br)
}

func produceErrors(t *testing.T, c cluster) float64 {
	t.Helper()
	var sum float64
	for _, g := range c.Gateways {
		v, err := g.Metric("chatd_gateway_produce_errors_total")
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	return sum
}

// gatewayID is gateway i's --gateway-id.
func gatewayID(c cluster, i int) string {
	args := c.Gateways[i].Args()
	for j := range args {
		if args[j] == "--gateway-id" && j+1 < len(args) {
			return args[j+1]
		}
	}
	return ""
}

// redisExists runs EXISTS key over a plain RESP connection.
func redisExists(t *testing.T, addr, key string) bool {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "*2\r\n$6\r\nEXISTS\r\n$%d\r\n%s\r\n", len(key), key)
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return strings.HasPrefix(string(buf[:n]), ":1")
}
