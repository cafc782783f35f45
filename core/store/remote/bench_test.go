package remote_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// BenchmarkRemoteCommit is one message per Commit through the client and
// a loopback server (fsync included): the per-message cost a core pays on
// the local cluster.
func BenchmarkRemoteCommit(b *testing.B) {
	s := serve(b, b.TempDir())
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		batch := &store.Batch{Messages: []store.Message{{ConvID: 1, MessageID: uint64(i + 1), Seq: uint64(i + 1),
			Sender: "alice", SenderDevice: "phone", ClientMsgID: fmt.Sprint(i), Kind: wire.KindText, Body: []byte("hello there")}}}
		if err := s.cl.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRemoteLookupMiss is the dedupe lookup every new SEND makes.
func BenchmarkRemoteLookupMiss(b *testing.B) {
	s := serve(b, b.TempDir())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := s.cl.LookupClientMsg(ctx, 1, "alice", "nope"); err != nil || ok {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkRemoteLookupMiss100 is the core's dedupe check of a polled batch
// of 100 new SENDs: one call for all of them (per-key cost: ns/op / 100).
func BenchmarkRemoteLookupMiss100(b *testing.B) {
	s := serve(b, b.TempDir())
	ctx := context.Background()
	keys := make([]store.ClientMsgKey, 100)
	for i := range keys {
		keys[i] = store.ClientMsgKey{ConvID: uint64(i%10 + 1), Sender: "alice", ClientMsgID: fmt.Sprint("nope-", i)}
	}
	b.ReportAllocs()
	for b.Loop() {
		res, err := s.cl.LookupClientMsgs(ctx, keys)
		if err != nil || len(res) != len(keys) {
			b.Fatal(len(res), err)
		}
	}
}
