package sdk

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/sdk/sdktest"
	"github.com/chatd-dev/chatd/wire"
)

func TestHandshake(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	c, rec := newClient(t, srv, "alice", "laptop", nil)
	start(t, c)

	conn := waitEvent[Connected](t, rec)
	if conn.UserID != "alice" || conn.DeviceID != "laptop" || conn.Heartbeat != 30*time.Second {
		t.Fatalf("Connected = %+v", conn)
	}
	if r := waitEvent[Resumed](t, rec); r.Truncated || r.Messages != 0 {
		t.Fatalf("Resumed = %+v", r)
	}
	if c.UserID() != "alice" {
		t.Fatalf("UserID() = %q", c.UserID())
	}
	hello := srv.Log(wire.TypeHello)
	if len(hello) != 1 {
		t.Fatalf("%d HELLOs", len(hello))
	}
	h := decode(t, hello[0].Frame).Hello
	if string(h.DeviceID) != "laptop" || h.MinVersion != 1 || h.MaxVersion != 1 || h.Caps != 0 {
		t.Fatalf("HELLO = %+v", h)
	}
	// RESUME follows WELCOME at once, with no cursors for a fresh client.
	all := srv.Log(0)
	if len(all) < 2 || all[1].Type != wire.TypeResume {
		t.Fatalf("second frame is not RESUME: %v", all)
	}
	if r := decode(t, all[1].Frame).Resume; len(r.Cursors) != 0 {
		t.Fatalf("RESUME cursors = %v", r.Cursors)
	}
}

func TestSendAck(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	alice, arec := newClient(t, srv, "alice", "laptop", nil)
	bob, brec := newClient(t, srv, "bob", "phone", nil)
	start(t, alice)
	start(t, bob)
	waitEvent[Resumed](t, brec)

	ack, err := alice.SendWait(testCtx(t), conv, wire.KindText, []byte("hi bob"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Conv != conv || ack.Seq != 1 || ack.MessageID == 0 || len(ack.ClientMsgID) != 32 {
		t.Fatalf("Ack = %+v", ack)
	}
	if ev := waitEvent[Ack](t, arec); ev != ack {
		t.Fatalf("Ack event %+v, SendWait returned %+v", ev, ack)
	}
	msgs := brec.waitMessages(t, conv, 1)
	m := msgs[0]
	if string(m.Body) != "hi bob" || m.Sender != "alice" || m.SenderDevice != "laptop" ||
		m.ClientMsgID != ack.ClientMsgID || m.ID != ack.MessageID || m.Replay {
		t.Fatalf("bob got %+v", m)
	}
	// The sender's own message is an Ack, never a Message, yet it is part
	// of the stream: alice's cursor passes it.
	eventually(t, "alice's cursor at 1", func() bool { return alice.Cursors()[conv] == 1 })
	if got := arec.messages(conv); len(got) != 0 {
		t.Fatalf("alice got her own message as a Message: %+v", got)
	}
	// Bob's client marks it delivered by itself.
	eventually(t, "bob's delivered pointer", func() bool {
		return srv.Pointer(conv, "bob", wire.ReceiptDelivered) == 1
	})
	rc := arec.waitNext(t, "bob's delivered receipt", func(ev Event) bool {
		r, ok := ev.(Receipt)
		return ok && r.User == "bob" && r.Kind == wire.ReceiptDelivered
	}).(Receipt)
	if rc.Conv != conv || rc.UpToSeq != 1 {
		t.Fatalf("Receipt = %+v", rc)
	}
}

func TestSendValidation(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	c, _ := newClient(t, srv, "alice", "laptop", nil)
	ctx := testCtx(t)
	if _, err := c.Send(ctx, 0, wire.KindText, nil); err == nil {
		t.Error("conv 0 accepted")
	}
	if _, err := c.Send(ctx, 1, wire.KindText, make([]byte, wire.MaxBodySize+1)); err == nil {
		t.Error("oversized body accepted")
	}
	c.Close()
	if _, err := c.Send(ctx, 1, wire.KindText, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
}

// sendsOf returns the client_msg_ids of the SEND frames the server got.
func sendsOf(t *testing.T, srv *sdktest.Server) (ids []string, conns []uint64) {
	for _, l := range srv.Log(wire.TypeSend) {
		ids = append(ids, string(decode(t, l.Frame).Send.ClientMsgID))
		conns = append(conns, l.Conn.ID())
	}
	return ids, conns
}

func TestResendAfterDrop(t *testing.T) {
	for _, persisted := range []bool{false, true} {
		name := map[bool]string{false: "lost_before_persisting", true: "persisted_but_not_acked"}[persisted]
		t.Run(name, func(t *testing.T) {
			srv := sdktest.NewServer(sdktest.Options{})
			defer srv.Close()
			conv := srv.Direct("alice", "bob")
			var dropped atomic.Bool
			srv.SetHook(func(c *sdktest.Conn, typ wire.Type, frame []byte) bool {
				if typ != wire.TypeSend || dropped.Swap(true) {
					return false
				}
				if persisted {
					s := decode(t, frame).Send
					srv.Store(s.ConvID, c.User(), c.Device(), string(s.ClientMsgID), s.Kind, s.Body)
				}
				c.Close() // no ACK
				return true
			})
			alice, arec := newClient(t, srv, "alice", "laptop", nil)
			start(t, alice)

			ack, err := alice.SendWait(testCtx(t), conv, wire.KindText, []byte("once"))
			if err != nil {
				t.Fatal(err)
			}
			if msgs := srv.Messages(conv); len(msgs) != 1 || string(msgs[0].Body) != "once" {
				t.Fatalf("server stored %+v", msgs)
			}
			if ack.Seq != 1 {
				t.Fatalf("Ack = %+v", ack)
			}
			if !persisted {
				// The resend is what stored it, with the same id.
				ids, conns := sendsOf(t, srv)
				if len(ids) != 2 || ids[0] != ids[1] || ids[0] != ack.ClientMsgID || conns[0] == conns[1] {
					t.Fatalf("SENDs %v on conns %v, ack %+v", ids, conns, ack)
				}
			} else {
				// The RESUME replay of our own message already counts as
				// the ACK; the resend (if it went out) gets a duplicate
				// ACK that changes nothing.
				if ids, _ := sendsOf(t, srv); slices.ContainsFunc(ids, func(id string) bool { return id != ack.ClientMsgID }) {
					t.Fatalf("SENDs %v", ids)
				}
			}
			eventually(t, "cursor 1", func() bool { return alice.Cursors()[conv] == 1 })
			if got := arec.messages(conv); len(got) != 0 {
				t.Fatalf("own message emitted as Message: %+v", got)
			}
			if st := alice.Stats(); st.PendingSends != 0 || st.Connects < 2 {
				t.Fatalf("Stats = %+v", st)
			}
		})
	}
}

func TestResendAfterAckTimeout(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	var swallowed atomic.Bool
	srv.SetHook(func(c *sdktest.Conn, typ wire.Type, frame []byte) bool {
		return typ == wire.TypeSend && !swallowed.Swap(true)
	})
	alice, _ := newClient(t, srv, "alice", "laptop", func(c *Config) { c.AckTimeout = 5 * time.Millisecond })
	start(t, alice)
	ack, err := alice.SendWait(testCtx(t), conv, wire.KindText, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	ids, conns := sendsOf(t, srv)
	if len(ids) < 2 || ids[0] != ack.ClientMsgID || ids[1] != ids[0] || conns[0] != conns[1] {
		t.Fatalf("SENDs %v on conns %v", ids, conns)
	}
	if n := len(srv.Messages(conv)); n != 1 {
		t.Fatalf("%d messages stored", n)
	}
}

func TestSendErrors(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	other := srv.Direct("bob", "carol")
	var refusals atomic.Int32
	srv.SetHook(func(c *sdktest.Conn, typ wire.Type, frame []byte) bool {
		if typ != wire.TypeSend || refusals.Add(1) > 2 {
			return false
		}
		s := decode(t, frame).Send
		if s.ConvID != conv {
			refusals.Add(-1)
			return false
		}
		code := wire.CodeUnavailable
		if refusals.Load() == 2 {
			code = wire.CodeRateLimited
		}
		c.Error(wire.Error{Code: code, RefType: wire.TypeSend, ConvID: s.ConvID, ClientMsgID: s.ClientMsgID})
		return true
	})
	alice, arec := newClient(t, srv, "alice", "laptop", nil)
	start(t, alice)

	// Retryable refusals: resent (same id) until accepted.
	ack, err := alice.SendWait(testCtx(t), conv, wire.KindText, []byte("retry me"))
	if err != nil {
		t.Fatal(err)
	}
	if ids, _ := sendsOf(t, srv); len(ids) != 3 || ids[0] != ack.ClientMsgID || ids[2] != ids[0] {
		t.Fatalf("SENDs %v", ids)
	}

	// Non-retryable: fails once, with an event.
	_, err = alice.SendWait(testCtx(t), other, wire.KindText, []byte("nope"))
	var se *ServerError
	if !errors.As(err, &se) || se.Code != wire.CodeNotMember {
		t.Fatalf("SendWait = %v", err)
	}
	f := waitEvent[SendFailed](t, arec)
	if f.Code != wire.CodeNotMember || f.Conv != other {
		t.Fatalf("SendFailed = %+v", f)
	}
	if n := alice.Stats().PendingSends; n != 0 {
		t.Fatalf("%d sends pending", n)
	}
}

// connected starts c and waits for the end of the first RESUME; it returns
// the server side of the connection.
func connected(t *testing.T, srv *sdktest.Server, c *Client, rec *recorder) *sdktest.Conn {
	t.Helper()
	start(t, c)
	sc, err := srv.NextConn(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	waitEvent[Resumed](t, rec)
	return sc
}

func historyReqs(t *testing.T, srv *sdktest.Server) []wire.History {
	var out []wire.History
	for _, l := range srv.Log(wire.TypeHistory) {
		out = append(out, decode(t, l.Frame).History)
	}
	return out
}

func TestGapFilledByHistory(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	alice, arec := newClient(t, srv, "alice", "laptop", nil)
	sc := connected(t, srv, alice, arec)

	m := storeN(srv, conv, "bob", 5)
	// Live delivery with 2 missing: 3 waits for HISTORY to bring 2.
	sc.Write(m[0].Frame(0))
	sc.Write(m[2].Frame(0))
	arec.waitMessages(t, conv, 3)
	// 5 before 4: 4 is requested, and the late live 4 is a duplicate.
	sc.Write(m[4].Frame(0))
	eventually(t, "HISTORY for 4", func() bool { return len(historyReqs(t, srv)) == 2 })
	msgs := arec.waitMessages(t, conv, 5)
	sc.Write(m[3].Frame(0))
	checkSeqs(t, msgs, 5)
	for _, m := range msgs {
		if want := m.Seq == 2 || m.Seq == 4; m.Replay != want {
			t.Errorf("seq %d: Replay = %v", m.Seq, m.Replay)
		}
	}
	h := historyReqs(t, srv)
	for i, want := range []wire.History{
		{ReqID: h[0].ReqID, ConvID: conv, BeforeSeq: 3, Limit: 1},
		{ReqID: h[1].ReqID, ConvID: conv, BeforeSeq: 5, Limit: 1},
	} {
		if h[i] != want {
			t.Fatalf("HISTORY %d = %+v, want %+v", i, h[i], want)
		}
	}
	eventually(t, "the late 4 dropped", func() bool { return alice.Stats().Duplicates == 1 })
	if st := alice.Stats(); st.Buffered != 0 || st.GapRequests != 2 {
		t.Fatalf("Stats = %+v", st)
	}
	if n := len(arec.messages(conv)); n != 5 {
		t.Fatalf("%d messages", n)
	}
}

func TestLargeGapFilledBottomUp(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	alice, arec := newClient(t, srv, "alice", "laptop", nil)
	sc := connected(t, srv, alice, arec)

	m := storeN(srv, conv, "bob", 450)
	sc.Write(m[0].Frame(0)) // the stream starts at 1
	sc.Write(m[449].Frame(0))
	checkSeqs(t, arec.waitMessages(t, conv, 450), 450)
	h := historyReqs(t, srv)
	want := []wire.History{
		{ConvID: conv, BeforeSeq: 202, Limit: 200},
		{ConvID: conv, BeforeSeq: 402, Limit: 200},
		{ConvID: conv, BeforeSeq: 450, Limit: 48},
	}
	if len(h) != len(want) {
		t.Fatalf("HISTORY requests %+v", h)
	}
	for i := range h {
		h[i].ReqID = 0
		if h[i] != want[i] {
			t.Fatalf("HISTORY %d = %+v, want %+v", i, h[i], want[i])
		}
	}
}

// A conversation new to the client starts at its recent end.
func TestNewConversationsStartAtTheirRecentEnd(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	old := srv.Direct("alice", "bob")
	storeN(srv, old, "bob", 120)
	alice, arec := newClient(t, srv, "alice", "laptop", nil)
	sc := connected(t, srv, alice, arec)

	// Not listed in RESUME: the server replayed the newest 50.
	msgs := arec.messages(old)
	if len(msgs) != 50 || msgs[0].Seq != 71 || msgs[49].Seq != 120 {
		t.Fatalf("replayed %v", seqsOf(msgs))
	}
	// Older ones are scrollback, not events.
	page, more, err := alice.History(testCtx(t), old, 71, 20)
	if err != nil || !more || len(page) != 20 || page[0].Seq != 51 {
		t.Fatalf("History = %v, %v, %v", seqsOf(page), more, err)
	}

	// A conversation first seen live, mid-session, at seq 80: the stream
	// starts 50 below, fetched with HISTORY.
	group := srv.CreateConv(wire.ConvGroup, "alice", "bob", "carol")
	m := storeN(srv, group, "carol", 80)
	sc.Write(m[79].Frame(0))
	got := arec.waitMessages(t, group, 51)
	for i, msg := range got {
		if msg.Seq != uint64(30+i) {
			t.Fatalf("seqs %v", seqsOf(got))
		}
	}
	// A new conversation whose first messages arrive out of order.
	fresh := srv.Direct("alice", "dave")
	f := storeN(srv, fresh, "dave", 2)
	sc.Write(f[1].Frame(0))
	sc.Write(f[0].Frame(0))
	checkSeqs(t, arec.waitMessages(t, fresh, 2), 2)

	if h := historyReqs(t, srv); len(h) == 0 || h[0].ConvID != old {
		t.Fatalf("HISTORY requests %+v", h)
	}
	if st := alice.Stats(); st.Buffered != 0 || st.SkippedSeqs != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	// After a reconnect, all three are listed in RESUME.
	sc.Close()
	waitEvent[Connected](t, arec)
	waitEvent[Resumed](t, arec)
	resumes := srv.Log(wire.TypeResume)
	r := decode(t, resumes[len(resumes)-1].Frame).Resume
	if len(r.Cursors) != 3 {
		t.Fatalf("RESUME cursors %v", r.Cursors)
	}
}

func TestDuplicatesDropped(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	alice, arec := newClient(t, srv, "alice", "laptop", nil)
	sc := connected(t, srv, alice, arec)

	m := storeN(srv, conv, "bob", 5)
	sc.Write(m[0].Frame(0))
	sc.Write(m[0].Frame(0))               // same seq again
	sc.Write(m[1].Frame(0))               //
	sc.Write(m[0].Frame(wire.FlagReplay)) // a stray replay
	forged := m[1]                        // message 2's id under seq 3:
	forged.Seq = 3                        // held, not emitted
	sc.Write(forged.Frame(0))             //
	sc.Write(m[3].Frame(0))               // 4 follows the held 3
	sc.Write(m[3].Frame(wire.FlagReplay)) // and is duplicated
	sc.Write(m[4].Frame(0))               // 5 marks the end
	msgs := arec.waitMessages(t, conv, 4)
	if got := seqsOf(msgs); !slices.Equal(got, []uint64{1, 2, 4, 5}) {
		t.Fatalf("seqs %v", got)
	}
	st := alice.Stats()
	if st.Duplicates != 3 || st.DuplicateIDs != 1 || st.GapRequests != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	eventually(t, "cursor 5", func() bool { return alice.Cursors()[conv] == 5 })
}

func TestReplayAndLiveInterleaved(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	m := storeN(srv, conv, "bob", 5)
	srv.SetHook(func(c *sdktest.Conn, typ wire.Type, frame []byte) bool {
		if typ != wire.TypeResume {
			return false
		}
		req := decode(t, frame).Resume.ReqID
		c.Write(m[0].Frame(wire.FlagReplay))
		c.Write(m[1].Frame(wire.FlagReplay))
		live := srv.Post(conv, "bob", "phone", wire.KindText, []byte("live")) // seq 6, written live now
		c.Write(m[2].Frame(wire.FlagReplay))
		c.Write(m[3].Frame(wire.FlagReplay))
		c.Write(live.Frame(0)) // and a duplicate of it
		c.Write(m[4].Frame(wire.FlagReplay))
		c.Write(live.Frame(wire.FlagReplay)) // the server may replay it too
		done := wire.Resumed{ReqID: req, Conversations: 1, Messages: 6}
		c.Write(done.Append(nil, 0))
		return true
	})
	alice, arec := newClient(t, srv, "alice", "laptop", nil)
	start(t, alice)
	msgs := arec.waitMessages(t, conv, 6)
	checkSeqs(t, msgs, 6)
	for _, m := range msgs {
		if m.Replay != (m.Seq <= 5) {
			t.Errorf("seq %d Replay = %v", m.Seq, m.Replay)
		}
	}
	// The gap above seq 2 was left to the RESUME answer.
	if h := historyReqs(t, srv); len(h) != 0 {
		t.Fatalf("HISTORY requests %+v", h)
	}
	waitEvent[Resumed](t, arec)
	if st := alice.Stats(); st.Duplicates != 2 || st.Buffered != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestResumeWithCursorsAndTruncation(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{ResumeCap: 10})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	quiet := srv.Direct("alice", "carol")
	storeN(srv, conv, "bob", 25)
	storeN(srv, quiet, "carol", 3)

	store := &memStore{m: map[uint64]uint64{conv: 2, quiet: 3}}
	alice, arec := newClient(t, srv, "alice", "laptop", func(c *Config) { c.Cursors = store })
	start(t, alice)
	msgs := arec.waitMessages(t, conv, 23)
	if len(msgs) != 23 || msgs[0].Seq != 3 || msgs[22].Seq != 25 {
		t.Fatalf("seqs %v", seqsOf(msgs))
	}
	for i, m := range msgs {
		if m.Seq != uint64(i+3) {
			t.Fatalf("seqs %v", seqsOf(msgs))
		}
	}
	// Cap 10: RESUME after 2 gets 3..12 (truncated), again after 12 gets
	// 13..22 (truncated), again after 22 gets 23..25.
	for i, want := range []bool{true, true, false} {
		if r := waitEvent[Resumed](t, arec); r.Truncated != want {
			t.Fatalf("Resumed %d = %+v", i, r)
		}
	}
	var lastSeqs []uint64
	for _, l := range srv.Log(wire.TypeResume) {
		r := decode(t, l.Frame).Resume
		for _, c := range r.Cursors {
			if c.ConvID == conv {
				lastSeqs = append(lastSeqs, c.LastSeq)
			}
		}
	}
	if !slices.Equal(lastSeqs, []uint64{2, 12, 22}) {
		t.Fatalf("RESUME cursors for conv: %v", lastSeqs)
	}
	if h := historyReqs(t, srv); len(h) != 0 {
		t.Fatalf("HISTORY requests %+v", h)
	}
	eventually(t, "cursor saved", func() bool { return store.get(conv) == 25 })
	if got := arec.messages(quiet); len(got) != 0 {
		t.Fatalf("quiet conversation replayed %v", seqsOf(got))
	}
}

type memStore struct {
	mu sync.Mutex
	m  map[uint64]uint64
}

func (s *memStore) Load() (map[uint64]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[uint64]uint64{}
	for k, v := range s.m {
		out[k] = v
	}
	return out, nil
}

func (s *memStore) Save(conv, seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[conv] = seq
	return nil
}

func (s *memStore) get(conv uint64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[conv]
}

func receiptsOf(t *testing.T, srv *sdktest.Server, kind wire.ReceiptKind) []uint64 {
	var out []uint64
	for _, l := range srv.Log(wire.TypeReceipt) {
		if r := decode(t, l.Frame).Receipt; r.Kind == kind {
			out = append(out, r.UpToSeq)
		}
	}
	return out
}

func TestReceiptBatching(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	storeN(srv, conv, "bob", 100)
	alice, arec := newClient(t, srv, "alice", "laptop", func(c *Config) {
		c.ReceiptInterval = time.Hour // the test plays the clock
		c.DisableAutoDelivered = true
	})
	connected(t, srv, alice, arec)

	for seq := uint64(1); seq <= 100; seq++ {
		alice.MarkRead(conv, seq)
	}
	alice.MarkRead(conv, 50) // lower values are ignored
	// The first mark went out at once; the others wait for the interval.
	eventually(t, "first receipt", func() bool { return srv.Pointer(conv, "alice", wire.ReceiptRead) == 1 })
	if got := receiptsOf(t, srv, wire.ReceiptRead); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("read receipts %v", got)
	}
	// One interval later: one RECEIPT with the latest value.
	alice.mu.Lock()
	alice.flushReceiptsAtLocked(alice.now().Add(time.Hour + time.Second))
	alice.mu.Unlock()
	eventually(t, "second receipts", func() bool {
		return srv.Pointer(conv, "alice", wire.ReceiptRead) == 100 &&
			srv.Pointer(conv, "alice", wire.ReceiptDelivered) == 100
	})
	if got := receiptsOf(t, srv, wire.ReceiptRead); !slices.Equal(got, []uint64{1, 100}) {
		t.Fatalf("read receipts %v", got)
	}
	if got := receiptsOf(t, srv, wire.ReceiptDelivered); len(got) != 0 {
		t.Fatalf("delivered receipts %v: read implies delivered on the server", got)
	}
	// Nothing moved: nothing is sent.
	alice.mu.Lock()
	alice.flushReceiptsAtLocked(alice.now().Add(3 * time.Hour))
	alice.mu.Unlock()
	alice.MarkRead(conv, 100)
	if got := receiptsOf(t, srv, wire.ReceiptRead); len(got) != 2 {
		t.Fatalf("read receipts %v", got)
	}
}

func TestReceiptsSurviveReconnect(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	storeN(srv, conv, "bob", 3)
	var lost atomic.Bool
	srv.SetHook(func(c *sdktest.Conn, typ wire.Type, frame []byte) bool {
		if typ == wire.TypeReceipt && !lost.Swap(true) {
			c.Close() // the receipt is lost with the connection
			return true
		}
		return false
	})
	alice, arec := newClient(t, srv, "alice", "laptop", func(c *Config) { c.DisableAutoDelivered = true })
	alice.MarkRead(conv, 2) // before Start: kept until connected
	start(t, alice)
	eventually(t, "read pointer 2", func() bool { return srv.Pointer(conv, "alice", wire.ReceiptRead) == 2 })
	if !lost.Load() {
		t.Fatal("hook did not run")
	}
	waitEvent[Disconnected](t, arec)
	waitEvent[Connected](t, arec)
}

func TestReconnectAfterGoaway(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	alice, arec := newClient(t, srv, "alice", "laptop", nil)
	var mu sync.Mutex
	var sleeps []time.Duration
	alice.sleep = func(ctx context.Context, d time.Duration) bool {
		mu.Lock()
		sleeps = append(sleeps, d)
		mu.Unlock()
		return alice.defaultSleep(ctx, 0)
	}
	sc := connected(t, srv, alice, arec)
	sc.Goaway(wire.CodeShuttingDown, 40*time.Millisecond, "bye")

	d := waitEvent[Disconnected](t, arec)
	var ge *GoawayError
	if !errors.As(d.Err, &ge) || ge.Code != wire.CodeShuttingDown || ge.Message != "bye" {
		t.Fatalf("Disconnected = %+v", d)
	}
	if d.RetryIn < 40*time.Millisecond {
		t.Fatalf("RetryIn %v is below the GOAWAY floor", d.RetryIn)
	}
	waitEvent[Connected](t, arec)
	if _, err := srv.NextConn(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sleeps) != 1 || sleeps[0] != d.RetryIn {
		t.Fatalf("slept %v", sleeps)
	}
}

func TestReconnectAfterServerVanishes(t *testing.T) {
	srv1 := sdktest.NewServer(sdktest.Options{})
	var addr atomic.Value
	addr.Store(hostPort(srv1.URL()))

	sleeps := make(chan time.Duration, 100)
	alice, arec := newClient(t, srv1, "alice", "laptop", func(c *Config) {
		c.BackoffMin, c.BackoffMax = time.Millisecond, 8*time.Millisecond
		c.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr.Load().(string))
		}
	})
	alice.randN = func(n int64) int64 { return n - 1 } // always the ceiling
	var failures atomic.Int32
	alice.sleep = func(ctx context.Context, d time.Duration) bool {
		select {
		case sleeps <- d:
		default:
		}
		if failures.Add(1) == 6 {
			// The server comes back elsewhere after a few failed attempts.
			srv2 := sdktest.NewServer(sdktest.Options{})
			t.Cleanup(srv2.Close)
			addr.Store(hostPort(srv2.URL()))
		}
		return alice.defaultSleep(ctx, d)
	}
	connected(t, srv1, alice, arec)
	srv1.Close()

	waitEvent[Disconnected](t, arec)
	waitEvent[Connected](t, arec)
	// Full jitter with randN at its maximum shows the ceilings: attempt 0
	// after losing a working connection, then doubling up to BackoffMax.
	want := []time.Duration{1, 2, 4, 8, 8, 8}
	for i, w := range want {
		if got := <-sleeps; got != w*time.Millisecond {
			t.Fatalf("sleep %d = %v, want %v", i, got, w*time.Millisecond)
		}
	}
}

func hostPort(wsURL string) string {
	return strings.TrimSuffix(strings.TrimPrefix(wsURL, "ws://"), sdktest.WSPath)
}

func TestBackoffJitter(t *testing.T) {
	c, err := New(Config{URL: "ws://x/", Token: func(context.Context) (string, error) { return "", nil }, DeviceID: "d"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for n := range 12 {
		ceil := min(c.cfg.BackoffMax, c.cfg.BackoffMin<<n)
		for range 50 {
			if d := c.backoff(n); d < 0 || d > ceil {
				t.Fatalf("backoff(%d) = %v, ceiling %v", n, d, ceil)
			}
		}
	}
	if c.cfg.BackoffMin != 250*time.Millisecond || c.cfg.BackoffMax != 30*time.Second {
		t.Fatalf("defaults %v %v", c.cfg.BackoffMin, c.cfg.BackoffMax)
	}
}

func TestHeartbeatTimeout(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{HeartbeatMS: 25})
	defer srv.Close()
	srv.SetHook(func(c *sdktest.Conn, typ wire.Type, frame []byte) bool {
		// The first connection goes silent: no PONG, nothing else.
		return typ == wire.TypePing && c.ID() == 1
	})
	alice, arec := newClient(t, srv, "alice", "laptop", nil)
	connected(t, srv, alice, arec)
	d := waitEvent[Disconnected](t, arec)
	if !errors.Is(d.Err, ErrHeartbeatTimeout) {
		t.Fatalf("Disconnected = %+v", d)
	}
	waitEvent[Connected](t, arec)
	// The new connection answers pings and stays up; PONGs arrive.
	eventually(t, "a PING on the second connection", func() bool {
		for _, l := range srv.Log(wire.TypePing) {
			if l.Conn.ID() == 2 {
				return true
			}
		}
		return false
	})
}

func TestTokenRefreshAfterExpiry(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	var calls atomic.Int32
	alice, arec := newClient(t, srv, "alice", "laptop", func(c *Config) {
		c.Token = func(context.Context) (string, error) {
			calls.Add(1)
			return srv.Token("alice"), nil
		}
	})
	sc := connected(t, srv, alice, arec)
	srv.ExpireTokens("alice")
	sc.Close()
	// Reconnect with the cached token: refused; then a fresh one works.
	d := waitEvent[Disconnected](t, arec)
	if d.Err == nil {
		t.Fatal("no reason")
	}
	d = waitEvent[Disconnected](t, arec)
	if codeOf(d.Err) != wire.CodeTokenExpired {
		t.Fatalf("second Disconnected = %v", d.Err)
	}
	waitEvent[Connected](t, arec)
	if n := calls.Load(); n != 2 {
		t.Fatalf("Token called %d times", n)
	}
}

func TestHistoryAndOpenDirect(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	alice, arec := newClient(t, srv, "alice", "laptop", nil)
	connected(t, srv, alice, arec)
	ctx := testCtx(t)

	conv, err := alice.OpenDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if conv.ID == 0 || conv.Kind != wire.ConvDirect || !slices.Equal(conv.Members, []string{"alice", "bob"}) {
		t.Fatalf("OpenDirect = %+v", conv)
	}
	again, err := alice.OpenDirect(ctx, "bob")
	if err != nil || again.ID != conv.ID {
		t.Fatalf("second OpenDirect = %+v, %v", again, err)
	}
	if _, err := alice.OpenDirect(ctx, "alice"); codeOf(err) != wire.CodeInvalidArgument {
		t.Fatalf("OpenDirect(self) = %v", err)
	}

	for i := range 50 {
		srv.Post(conv.ID, "bob", "phone", wire.KindText, []byte{byte(i)})
	}
	checkSeqs(t, arec.waitMessages(t, conv.ID, 50), 50)
	dups := alice.Stats().Duplicates

	msgs, more, err := alice.History(ctx, conv.ID, 30, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqsOf(msgs); !more || len(got) != 10 || got[0] != 20 || got[9] != 29 {
		t.Fatalf("History = %v, %v", got, more)
	}
	if msgs[0].Body[0] != 19 || msgs[0].Sender != "bob" || !msgs[0].Replay {
		t.Fatalf("message %+v", msgs[0])
	}
	msgs, more, err = alice.History(ctx, conv.ID, 0, 200)
	if err != nil || more || len(msgs) != 50 {
		t.Fatalf("History(latest) = %d messages, %v, %v", len(msgs), more, err)
	}
	if d := alice.Stats().Duplicates; d != dups {
		t.Fatalf("History replays counted as duplicates: %d -> %d", dups, d)
	}
	if _, _, err := alice.History(ctx, 999, 0, 10); codeOf(err) != wire.CodeConvNotFound {
		t.Fatalf("History(unknown) = %v", err)
	}
	// Nothing was re-emitted as an event.
	if n := len(arec.messages(conv.ID)); n != 50 {
		t.Fatalf("%d message events", n)
	}
}

func TestOwnDevicesAndReadSync(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	laptop, lrec := newClient(t, srv, "alice", "laptop", nil)
	phone, prec := newClient(t, srv, "alice", "phone", nil)
	connected(t, srv, laptop, lrec)
	connected(t, srv, phone, prec)

	ack, err := laptop.SendWait(testCtx(t), conv, wire.KindText, []byte("from laptop"))
	if err != nil {
		t.Fatal(err)
	}
	// The phone sees it as a Message from alice's laptop.
	m := prec.waitMessages(t, conv, 1)[0]
	if m.Sender != "alice" || m.SenderDevice != "laptop" || m.ClientMsgID != ack.ClientMsgID {
		t.Fatalf("phone got %+v", m)
	}
	phone.MarkRead(conv, 1)
	r := lrec.waitNext(t, "read sync", func(ev Event) bool {
		r, ok := ev.(Receipt)
		return ok && r.Kind == wire.ReceiptRead
	}).(Receipt)
	if r.User != "alice" || r.UpToSeq != 1 {
		t.Fatalf("laptop got %+v", r)
	}
}

func TestSlowAppDoesNotStallConnection(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	c, err := New(Config{
		URL: srv.URL(), DeviceID: "laptop", EventBuffer: 1,
		Token: func(context.Context) (string, error) { return srv.Token("alice"), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start(t, c)
	// Opening the conversation gives its stream a start (seq 1).
	if _, err := c.OpenDirect(testCtx(t), "bob"); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		srv.Post(conv, "bob", "phone", wire.KindText, []byte{byte(i)})
	}
	// Nobody reads Events, yet the connection keeps working.
	if _, err := c.SendWait(testCtx(t), conv, wire.KindText, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "backlog queued", func() bool { return c.Stats().QueuedEvents > 250 })
	var seqs []uint64
	for ev := range c.Events() {
		if m, ok := ev.(Message); ok {
			seqs = append(seqs, m.Seq)
			if len(seqs) == 300 {
				break
			}
		}
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("seq %d at %d", s, i)
		}
	}
}

func TestCompression(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{Compression: true})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	alice, arec := newClient(t, srv, "alice", "laptop", func(c *Config) { c.Compression = true })
	start(t, alice)
	if !waitEvent[Connected](t, arec).Compression {
		t.Fatal("compression not negotiated")
	}
	body := bytes.Repeat([]byte("compressible "), 200)
	if _, err := alice.SendWait(testCtx(t), conv, wire.KindText, body); err != nil {
		t.Fatal(err)
	}
	l := srv.Log(wire.TypeSend)
	if wire.Flags(l[0].Frame[1])&wire.FlagCompressed == 0 {
		t.Fatal("SEND not compressed")
	}
	if got := srv.Messages(conv)[0].Body; !bytes.Equal(got, body) {
		t.Fatal("body mangled")
	}
}

func TestCloseUnblocksCalls(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	// Never started: everything waits for a connection.
	c, _ := newClient(t, srv, "alice", "laptop", nil)
	errs := make(chan error, 2)
	go func() {
		_, err := c.SendWait(context.Background(), 1, wire.KindText, []byte("x"))
		errs <- err
	}()
	go func() {
		_, err := c.OpenDirect(context.Background(), "bob")
		errs <- err
	}()
	eventually(t, "calls queued", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) == 1 && len(c.reqs) == 1
	})
	c.Close()
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Fatalf("got %v", err)
		}
	}
	if _, ok := <-c.Events(); ok {
		t.Fatal("Events not closed")
	}
}

// TestInboxNeedsAPIURL: Inbox without Config.APIURL, and a bad APIURL, are
// refused before any request.
func TestInboxNeedsAPIURL(t *testing.T) {
	tok := func(context.Context) (string, error) { return "", nil }
	c, err := New(Config{URL: "ws://x/", Token: tok, DeviceID: "d"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Inbox(context.Background(), "", 0); err == nil || !strings.Contains(err.Error(), "APIURL") {
		t.Fatalf("Inbox without APIURL: %v", err)
	}
	for _, u := range []string{"ws://x", "::", "ftp://x"} {
		if _, err := New(Config{URL: "ws://x/", APIURL: u, Token: tok, DeviceID: "d"}); err == nil {
			t.Fatalf("APIURL %q accepted", u)
		}
	}
}
