package scylla

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/core/store/storetest"
)

// TestScyllaContract runs the store contract suite against the cluster in
// CHAT_SCYLLA_HOSTS (comma-separated host[:port]), each subtest in a new
// keyspace that is dropped afterwards. No CQL server can run on the
// development machine; docs/operations.md says how to run this against a
// real cluster.
func TestScyllaContract(t *testing.T) {
	hosts := os.Getenv("CHAT_SCYLLA_HOSTS")
	if hosts == "" {
		t.Skip("CHAT_SCYLLA_HOSTS is not set: this suite needs a ScyllaDB or Cassandra cluster (none can run on the development machine; see docs/operations.md)")
	}
	open := func(t *testing.T, keyspace string) *Store {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		s, err := Open(ctx, Options{Hosts: strings.Split(hosts, ","), Keyspace: keyspace, Replication: 1})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	}
	var keyspaces sync.Map // *Store -> keyspace
	storetest.Run(t, storetest.Options{
		Open: func(t *testing.T) store.Store {
			b := make([]byte, 6)
			_, _ = rand.Read(b)
			ks := "chatd_test_" + hex.EncodeToString(b)
			t.Cleanup(func() { dropKeyspace(t, hosts, ks) })
			s := open(t, ks)
			keyspaces.Store(s, ks)
			return s
		},
		Reopen: func(t *testing.T, old store.Store) store.Store {
			ks, ok := keyspaces.Load(old)
			if !ok {
				t.Fatal("Reopen: unknown store")
			}
			_ = old.Close()
			s := open(t, ks.(string))
			keyspaces.Store(s, ks)
			return s
		},
	})
}

func dropKeyspace(t *testing.T, hosts, ks string) {
	c := gocql.NewCluster(strings.Split(hosts, ",")...)
	s, err := c.CreateSession()
	if err != nil {
		t.Logf("drop %s: %v", ks, err)
		return
	}
	defer s.Close()
	if err := s.Query(`DROP KEYSPACE IF EXISTS ` + ks).Exec(); err != nil {
		t.Logf("drop %s: %v", ks, err)
	}
}

func TestBucket(t *testing.T) {
	for _, tc := range []struct {
		seq  uint64
		want int64
	}{{1, 0}, {999, 0}, {1000, 1}, {1999, 1}, {2000, 2}, {1<<40 + 5, (1<<40 + 5) / BucketSize}} {
		if got := bucket(tc.seq); got != tc.want {
			t.Errorf("bucket(%d) = %d, want %d", tc.seq, got, tc.want)
		}
	}
}

func TestOpenValidates(t *testing.T) {
	ctx := context.Background()
	if _, err := Open(ctx, Options{Keyspace: "chatd"}); err == nil {
		t.Error("Open without hosts: nil error")
	}
	for _, ks := range []string{"", "1chatd", "chat-d", "chatd; DROP KEYSPACE x", strings.Repeat("k", 49)} {
		if _, err := Open(ctx, Options{Hosts: []string{"127.0.0.1"}, Keyspace: ks}); err == nil || !strings.Contains(err.Error(), "keyspace name") {
			t.Errorf("Open(keyspace %q) = %v, want a bad keyspace name error", ks, err)
		}
	}
}

func TestMigrationsEmbedded(t *testing.T) {
	b, err := migrations.ReadFile("migrations/0001_init.cql")
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"conversations", "user_conversations", "conv_meta", "messages", "client_msgs", "pointers"} {
		if !strings.Contains(string(b), "CREATE TABLE IF NOT EXISTS "+table+" (") {
			t.Errorf("migration lacks table %s", table)
		}
	}
	if !strings.Contains(string(b), "TimeWindowCompactionStrategy") || !strings.Contains(string(b), "CLUSTERING ORDER BY (seq DESC)") {
		t.Error("messages: want TWCS and seq DESC clustering")
	}
}
