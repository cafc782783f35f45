package sdk

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/chatd-dev/chatd/sdk/sdktest"
	"github.com/chatd-dev/chatd/wire"
)

func TestFileCursorStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "cursors.json")
	s := FileCursorStore(path)
	got, err := s.Load()
	if err != nil || len(got) != 0 {
		t.Fatalf("Load of a missing file = %v, %v", got, err)
	}
	want := map[uint64]uint64{1: 5, 7: 1, 1 << 60: 99}
	for conv, seq := range want {
		if err := s.Save(conv, seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err = FileCursorStore(path).Load()
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("reloaded %v, %v; want %v", got, err, want)
	}
	// The file is plain JSON, and no temporary files are left behind.
	b, _ := os.ReadFile(path)
	var cf cursorFile
	if err := json.Unmarshal(b, &cf); err != nil || cf.Version != 1 || cf.Cursors["7"] != 1 {
		t.Fatalf("file %s: %v", b, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("directory holds %v", ents)
	}
}

func TestFileCursorStoreDebouncedWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cursors.json")
	s := FileCursorStore(path)
	s.FlushDelay = 0
	s.Save(3, 4)
	eventually(t, "background write", func() bool {
		got, err := FileCursorStore(path).Load()
		return err == nil && got[3] == 4
	})
}

func TestFileCursorStoreMergesExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cursors.json")
	first := FileCursorStore(path)
	first.Save(1, 10)
	first.Flush()
	// A store that never called Load must not drop what the file holds.
	second := FileCursorStore(path)
	second.Save(2, 20)
	second.Flush()
	got, _ := FileCursorStore(path).Load()
	if !maps.Equal(got, map[uint64]uint64{1: 10, 2: 20}) {
		t.Fatalf("got %v", got)
	}
}

func TestFileCursorStoreBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cursors.json")
	os.WriteFile(path, []byte("{nope"), 0o600)
	if _, err := FileCursorStore(path).Load(); err == nil {
		t.Fatal("garbage loaded")
	}
}

// A client restarted with the same FileStore resumes after what the app
// received.
func TestClientPersistsCursors(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	storeN(srv, conv, "bob", 3)
	path := filepath.Join(t.TempDir(), "cursors.json")

	c1, rec1 := newClient(t, srv, "alice", "laptop", func(c *Config) { c.Cursors = FileCursorStore(path) })
	start(t, c1)
	rec1.waitMessages(t, conv, 3)
	eventually(t, "cursor 3", func() bool { return c1.Cursors()[conv] == 3 })
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}

	srv.Store(conv, "bob", "phone", "", wire.KindText, []byte("new"))
	c2, rec2 := newClient(t, srv, "alice", "laptop", func(c *Config) { c.Cursors = FileCursorStore(path) })
	if err := c2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	msgs := rec2.waitMessages(t, conv, 1)
	if len(msgs) != 1 || msgs[0].Seq != 4 || string(msgs[0].Body) != "new" {
		t.Fatalf("after restart got %v", seqsOf(msgs))
	}
	resumes := srv.Log(wire.TypeResume)
	r := decode(t, resumes[len(resumes)-1].Frame).Resume
	if len(r.Cursors) != 1 || r.Cursors[0] != (wire.Cursor{ConvID: conv, LastSeq: 3}) {
		t.Fatalf("RESUME cursors %v", r.Cursors)
	}
}

func TestDevToken(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	tok, err := DevToken(context.Background(), srv.APIURL()+"/", "alice", "d1")
	if err != nil || tok == "" {
		t.Fatalf("DevToken = %q, %v", tok, err)
	}
	if _, err := DevToken(context.Background(), srv.APIURL(), "", "d1"); err == nil {
		t.Fatal("empty user accepted")
	}
}
