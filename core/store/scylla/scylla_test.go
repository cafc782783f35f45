package scylla

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/core/store/storetest"
	"github.com/chatd-dev/chatd/wire"
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
	// Every table is created by a statement gocqlx actually sends (a
	// statement after a comment would be skipped).
	stmts := migrationStatements(b)
	if len(stmts) != 6 {
		t.Errorf("gocqlx runs %d statements of 0001_init.cql, want 6", len(stmts))
	}
	for i, table := range []string{"conversations", "user_conversations", "conv_meta", "messages", "client_msgs", "pointers"} {
		if i >= len(stmts) || !strings.HasPrefix(stmts[i], "CREATE TABLE IF NOT EXISTS "+table+" (") {
			t.Errorf("statement %d does not create table %s", i, table)
		}
	}
	if !strings.Contains(string(b), "TimeWindowCompactionStrategy") || !strings.Contains(string(b), "CLUSTERING ORDER BY (seq DESC)") {
		t.Error("messages: want TWCS and seq DESC clustering")
	}
}

// migrationStatements returns the statements gocqlx/migrate (v3.0.4,
// applyMigration) sends to the server for a file: it cuts the file after
// every ';', trims each piece and skips the pieces that start with "--",
// whatever follows the comment.
func migrationStatements(b []byte) []string {
	var out []string
	r := bytes.NewBuffer(b)
	for {
		stmt, err := r.ReadString(';')
		if err == io.EOF && strings.TrimSpace(stmt) == "" {
			return out
		}
		if stmt = strings.TrimSpace(stmt); stmt != "" && !strings.HasPrefix(stmt, "--") {
			out = append(out, stmt)
		}
		if err == io.EOF {
			return out
		}
	}
}

// TestMigrationGroups: 0002_groups.cql adds the two group columns, and
// gocqlx/migrate runs both statements (a statement after a comment would
// be skipped).
func TestMigrationGroups(t *testing.T) {
	b, err := migrations.ReadFile("migrations/0002_groups.cql")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"ALTER TABLE conversations ADD name text;",
		"ALTER TABLE conversations ADD admins set<text>;",
	}
	if got := migrationStatements(b); !slices.Equal(got, want) {
		t.Errorf("statements gocqlx runs:\n%q\nwant\n%q", got, want)
	}
	// The helper does skip a statement that follows a comment.
	if got := migrationStatements([]byte("-- why\nALTER TABLE t ADD c int;\nALTER TABLE t ADD d int;\n-- end")); !slices.Equal(got, []string{"ALTER TABLE t ADD d int;"}) {
		t.Errorf("migrationStatements(comment first) = %q", got)
	}
	names, err := migrations.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, n := range names {
		files = append(files, n.Name())
	}
	if !slices.Equal(files, []string{"0001_init.cql", "0002_groups.cql", "0003_settings.cql", "0004_seen.cql"}) {
		t.Errorf("embedded migrations %v, want 0001_init.cql to 0004_seen.cql", files)
	}
	b, err = migrations.ReadFile("migrations/0004_seen.cql")
	if err != nil {
		t.Fatal(err)
	}
	if got := migrationStatements(b); !slices.Equal(got, []string{"ALTER TABLE pointers ADD seen_seq bigint;"}) {
		t.Errorf("0004 statements gocqlx runs: %q", got)
	}
	b, err = migrations.ReadFile("migrations/0003_settings.cql")
	if err != nil {
		t.Fatal(err)
	}
	if got := migrationStatements(b); len(got) != 1 || !strings.HasPrefix(got[0], "CREATE TABLE IF NOT EXISTS user_settings (") {
		t.Errorf("0003 statements gocqlx runs: %q", got)
	}
}

// TestPlanGroupUpdates covers the part of Commit's group updates that runs
// without a cluster: validation and the net effect of several updates.
func TestPlanGroupUpdates(t *testing.T) {
	const g, g2, direct, missing = 1, 2, 3, 4
	stored := map[uint64]store.Conversation{
		g:      {ID: g, Kind: wire.ConvGroup, CreatedMS: 10, Members: []string{"a", "b", "e"}, Name: "g", Admins: []string{"a"}},
		g2:     {ID: g2, Kind: wire.ConvGroup, CreatedMS: 20, Members: []string{"a"}},
		direct: {ID: direct, Kind: wire.ConvDirect, Members: []string{"a", "b"}},
	}
	var lookups []uint64
	base := func(id uint64) (store.Conversation, bool, error) {
		lookups = append(lookups, id)
		c, ok := stored[id]
		return c, ok, nil
	}
	ups := []store.GroupUpdate{
		{ // d in, e out; Kind and CreatedMS here are ignored
			Conv:  store.Conversation{ID: g, Kind: wire.ConvDirect, CreatedMS: 1, Name: "one", Members: []string{"d", "b", "a", "d"}, Admins: []string{"d", "a", "a"}},
			Added: []string{"d"}, Removed: []string{"e"},
		},
		{Conv: store.Conversation{ID: g2, Name: "other", Members: []string{"a", "x"}}, Added: []string{"x"}},
		{ // d out again, e back, c in; both in Added and Removed: out
			Conv:  store.Conversation{ID: g, Name: "two", Members: []string{"e", "c", "b", "a", "c"}, Admins: []string{"b", "b"}},
			Added: []string{"e", "c", "y"}, Removed: []string{"d", "y"},
		},
	}
	p, err := planGroupUpdates(ups, base)
	if err != nil {
		t.Fatal(err)
	}
	wantConvs := []store.Conversation{
		{ID: g, Kind: wire.ConvGroup, CreatedMS: 10, Members: []string{"a", "b", "c", "e"}, Name: "two", Admins: []string{"b"}},
		{ID: g2, Kind: wire.ConvGroup, CreatedMS: 20, Members: []string{"a", "x"}, Name: "other"},
	}
	if fmt.Sprint(p.convs) != fmt.Sprint(wantConvs) {
		t.Errorf("descriptions:\n%+v\nwant\n%+v", p.convs, wantConvs)
	}
	wantIndex := []indexChange{
		{"d", g, false}, {"e", g, true}, {"x", g2, true}, {"c", g, true}, {"y", g, false},
	}
	if !slices.Equal(p.index, wantIndex) {
		t.Errorf("index changes:\n%+v\nwant\n%+v", p.index, wantIndex)
	}
	if !slices.Equal(lookups, []uint64{g, g2}) {
		t.Errorf("base looked up %v, want each group once: [%d %d]", lookups, g, g2)
	}
	if ups[0].Conv.Members[0] != "d" || ups[0].Conv.Admins[0] != "d" {
		t.Error("planGroupUpdates sorted the caller's slices")
	}

	for _, tc := range []struct {
		name string
		ups  []store.GroupUpdate
	}{
		{"missing", []store.GroupUpdate{{Conv: store.Conversation{ID: g}}, {Conv: store.Conversation{ID: missing}}}},
		{"direct", []store.GroupUpdate{{Conv: store.Conversation{ID: direct, Kind: wire.ConvGroup}}}},
	} {
		if p, err := planGroupUpdates(tc.ups, base); !errors.Is(err, store.ErrInvalid) || p.convs != nil || p.index != nil {
			t.Errorf("%s: planGroupUpdates = %+v, %v; want an empty plan and ErrInvalid", tc.name, p, err)
		}
	}
	boom := errors.New("read failed")
	_, err = planGroupUpdates(ups, func(uint64) (store.Conversation, bool, error) { return store.Conversation{}, false, boom })
	if !errors.Is(err, boom) || errors.Is(err, store.ErrInvalid) {
		t.Errorf("planGroupUpdates(read error) = %v, want the read error, not ErrInvalid", err)
	}
}
