// Package sdktest provides an in-memory fake chatd server for testing code
// that uses package sdk (or any other client of the chatd wire protocol).
//
// The fake speaks protocol version 1 over real WebSocket connections on a
// loopback port and implements the server semantics clients rely on:
// HELLO/WELCOME, SEND/ACK with idempotent resends, live MSG fan-out (not to
// the sending device), RESUME and HISTORY replays, receipts, OPEN_DIRECT,
// PING/PONG, plus POST /dev/token on the same port. It keeps everything in
// memory and is meant for tests only: it is not a reference implementation
// and has no limits, persistence or performance to speak of.
//
// Tests script misbehaviour with a Hook, which sees every client frame before
// the default handling, and with the methods of Conn (Write arbitrary frames,
// Close abruptly, Goaway):
//
//	srv := sdktest.NewServer(sdktest.Options{})
//	defer srv.Close()
//	srv.SetHook(func(c *sdktest.Conn, t wire.Type, frame []byte) bool {
//		if t == wire.TypeSend {
//			srv.HandleDefault(c, frame) // persist and ACK...
//			c.Close()                   // ...then drop the connection
//			return true
//		}
//		return false
//	})
package sdktest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/sdk/internal/wsconn"
	"github.com/chatd-dev/chatd/wire"
	"github.com/gobwas/ws"
)

// WSPath is the path of the WebSocket endpoint.
const WSPath = "/chat/v1/ws"

// Options configure a Server. The zero value is usable.
type Options struct {
	HeartbeatMS   uint64 // WELCOME heartbeat_ms; default 30000
	IdleTimeoutMS uint64 // WELCOME idle_timeout_ms; default 3 x HeartbeatMS
	ResumeCap     int    // replayed messages per listed conversation in a RESUME answer; default 1000
	ResumeNewCap  int    // newest messages replayed for a conversation RESUME does not list; default 50
	Compression   bool   // accept CapZstd in HELLO
}

// Message is a message stored by the fake.
type Message struct {
	ConvID       uint64
	MessageID    uint64
	Seq          uint64
	ServerTimeMS uint64
	Sender       string
	SenderDevice string
	ClientMsgID  string
	Kind         wire.MsgKind
	Body         []byte
}

// Frame encodes the message as a MSG frame with the given flags
// (0 for live delivery, wire.FlagReplay for a replay).
func (m Message) Frame(flags wire.Flags) []byte {
	f := wire.Msg{
		ConvID: m.ConvID, MessageID: m.MessageID, Seq: m.Seq, ServerTimeMS: m.ServerTimeMS,
		Sender: []byte(m.Sender), SenderDevice: []byte(m.SenderDevice),
		ClientMsgID: []byte(m.ClientMsgID), Kind: m.Kind, Body: m.Body,
	}
	return f.Append(nil, flags)
}

type conversation struct {
	id       uint64
	kind     wire.ConvKind
	members  []string // sorted
	msgs     []Message
	byClient map[string]int // sender + "\x00" + client_msg_id -> index in msgs
	pointers map[string]*[3]uint64
}

func (cv *conversation) member(user string) bool {
	_, ok := slices.BinarySearch(cv.members, user)
	return ok
}

// Hook sees every frame a client sends, after the header was parsed, before
// the default handling. Returning true means the hook handled the frame and
// the default handling is skipped. Hooks run on the connection's reading
// goroutine: frames of one connection are seen one at a time, in order.
type Hook func(c *Conn, t wire.Type, frame []byte) (handled bool)

// Server is a fake chatd server. Create it with NewServer.
type Server struct {
	opts Options
	ln   net.Listener
	http *http.Server

	mu        sync.Mutex
	hook      Hook
	convs     map[uint64]*conversation
	direct    map[[2]string]uint64
	conns     map[*Conn]struct{}
	tokenGen  map[string]int // user -> minimum valid token generation
	nextTok   int
	nextConv  uint64
	nextMsgID uint64
	nextConn  uint64
	log       []Logged
	closed    bool

	welcomed chan *Conn
	wg       sync.WaitGroup
}

// Logged is a client frame recorded by the server.
type Logged struct {
	Conn  *Conn
	Type  wire.Type
	Frame []byte
}

// NewServer starts a fake server on a loopback port. Close it when done.
func NewServer(opts Options) *Server {
	if opts.HeartbeatMS == 0 {
		opts.HeartbeatMS = 30000
	}
	if opts.IdleTimeoutMS == 0 {
		opts.IdleTimeoutMS = 3 * opts.HeartbeatMS
	}
	if opts.ResumeCap == 0 {
		opts.ResumeCap = 1000
	}
	if opts.ResumeNewCap == 0 {
		opts.ResumeNewCap = 50
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("sdktest: listen: " + err.Error())
	}
	s := &Server{
		opts:      opts,
		ln:        ln,
		convs:     map[uint64]*conversation{},
		direct:    map[[2]string]uint64{},
		conns:     map[*Conn]struct{}{},
		tokenGen:  map[string]int{},
		nextConv:  1,
		nextMsgID: 1000,
		welcomed:  make(chan *Conn, 1024),
	}
	mux := http.NewServeMux()
	mux.HandleFunc(WSPath, s.serveWS)
	mux.HandleFunc("POST /dev/token", s.serveToken)
	s.http = &http.Server{Handler: mux}
	go s.http.Serve(ln)
	return s
}

// URL is the WebSocket URL of the server (ws://127.0.0.1:port/chat/v1/ws).
func (s *Server) URL() string { return "ws://" + s.ln.Addr().String() + WSPath }

// APIURL is the base URL of the HTTP API (http://127.0.0.1:port).
func (s *Server) APIURL() string { return "http://" + s.ln.Addr().String() }

// Close stops the server and drops every connection.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.http.Close()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
}

// SetHook installs h (nil removes it).
func (s *Server) SetHook(h Hook) {
	s.mu.Lock()
	s.hook = h
	s.mu.Unlock()
}

// Token returns a valid token for user.
func (s *Server) Token(user string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextTok++
	return "tok:" + user + ":" + strconv.Itoa(s.nextTok)
}

// ExpireTokens makes every token issued so far for user fail with
// token_expired.
func (s *Server) ExpireTokens(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenGen[user] = s.nextTok + 1
}

func (s *Server) checkToken(tok string) (user string, code wire.Code) {
	parts := strings.Split(tok, ":")
	if len(parts) != 3 || parts[0] != "tok" || parts[1] == "" {
		return "", wire.CodeTokenInvalid
	}
	gen, err := strconv.Atoi(parts[2])
	if err != nil {
		return "", wire.CodeTokenInvalid
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen < s.tokenGen[parts[1]] {
		return "", wire.CodeTokenExpired
	}
	return parts[1], 0
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	var req struct{ User, Device string }
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.User == "" {
		http.Error(w, `{"error":"invalid_argument"}`, http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"token": s.Token(req.User)})
}

// NextConn waits for the next connection that completed HELLO/WELCOME.
func (s *Server) NextConn(ctx context.Context) (*Conn, error) {
	select {
	case c := <-s.welcomed:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Conns returns the connections currently open and welcomed.
func (s *Server) Conns() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Conn
	for c := range s.conns {
		if c.user != "" {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b *Conn) int { return int(a.id) - int(b.id) })
	return out
}

// Log returns the frames of type t received from clients so far (all types
// when t is 0), in arrival order.
func (s *Server) Log(t wire.Type) []Logged {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Logged
	for _, l := range s.log {
		if t == 0 || l.Type == t {
			out = append(out, l)
		}
	}
	return out
}

// CreateConv creates a conversation with the given members and returns its id.
func (s *Server) CreateConv(kind wire.ConvKind, members ...string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createConvLocked(kind, members)
}

func (s *Server) createConvLocked(kind wire.ConvKind, members []string) uint64 {
	m := slices.Clone(members)
	slices.Sort(m)
	m = slices.Compact(m)
	cv := &conversation{
		id: s.nextConv, kind: kind, members: m,
		byClient: map[string]int{}, pointers: map[string]*[3]uint64{},
	}
	s.nextConv++
	s.convs[cv.id] = cv
	return cv.id
}

// Direct returns the id of the direct conversation between a and b,
// creating it if needed.
func (s *Server) Direct(a, b string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.directLocked(a, b)
}

func (s *Server) directLocked(a, b string) uint64 {
	key := [2]string{min(a, b), max(a, b)}
	if id, ok := s.direct[key]; ok {
		return id
	}
	id := s.createConvLocked(wire.ConvDirect, []string{a, b})
	s.direct[key] = id
	return id
}

// Store persists a message without delivering it to anyone, as if it had
// been sent over another server. dup reports that (sender, clientMsgID) was
// already stored; the earlier message is returned then.
func (s *Server) Store(conv uint64, sender, device, clientMsgID string, kind wire.MsgKind, body []byte) (m Message, dup bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cv := s.convs[conv]
	if cv == nil {
		panic(fmt.Sprintf("sdktest: Store: no conversation %d", conv))
	}
	return s.storeLocked(cv, sender, device, clientMsgID, kind, body)
}

func (s *Server) storeLocked(cv *conversation, sender, device, clientMsgID string, kind wire.MsgKind, body []byte) (Message, bool) {
	key := sender + "\x00" + clientMsgID
	if clientMsgID != "" {
		if i, ok := cv.byClient[key]; ok {
			return cv.msgs[i], true
		}
	}
	s.nextMsgID++
	m := Message{
		ConvID: cv.id, MessageID: s.nextMsgID, Seq: uint64(len(cv.msgs)) + 1,
		ServerTimeMS: uint64(time.Now().UnixMilli()), Sender: sender, SenderDevice: device,
		ClientMsgID: clientMsgID, Kind: kind, Body: slices.Clone(body),
	}
	cv.msgs = append(cv.msgs, m)
	if clientMsgID != "" {
		cv.byClient[key] = len(cv.msgs) - 1
	}
	return m, false
}

// Post stores a message and delivers it live to every open connection of
// every member, except the sender's own device.
func (s *Server) Post(conv uint64, sender, device string, kind wire.MsgKind, body []byte) Message {
	m, _ := s.Store(conv, sender, device, "", kind, body)
	s.fanout(m, nil)
	return m
}

// Messages returns the messages stored in conv, in seq order.
func (s *Server) Messages(conv uint64) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cv := s.convs[conv]; cv != nil {
		return slices.Clone(cv.msgs)
	}
	return nil
}

// Pointer returns user's delivered or read pointer in conv.
func (s *Server) Pointer(conv uint64, user string, kind wire.ReceiptKind) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cv := s.convs[conv]; cv != nil {
		if p := cv.pointers[user]; p != nil {
			return p[kind]
		}
	}
	return 0
}

// fanout writes m live to the members' connections except the sending device.
func (s *Server) fanout(m Message, except *Conn) {
	frame := m.Frame(0)
	for _, c := range s.memberConns(m.ConvID, func(c *Conn) bool {
		return c == except || (c.user == m.Sender && c.device == m.SenderDevice)
	}) {
		c.Write(frame)
	}
}

// memberConns returns the welcomed connections of conv's members, minus
// those skip (called under s.mu) rejects.
func (s *Server) memberConns(conv uint64, skip func(*Conn) bool) []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	cv := s.convs[conv]
	if cv == nil {
		return nil
	}
	var out []*Conn
	for c := range s.conns {
		if c.user != "" && cv.member(c.user) && (skip == nil || !skip(c)) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b *Conn) int { return int(a.id) - int(b.id) })
	return out
}

// Conn is one client connection to the fake server.
type Conn struct {
	s      *Server
	id     uint64
	nc     net.Conn
	user   string
	device string
	caps   uint64

	wmu    sync.Mutex
	closed bool
}

// User is the authenticated user ("" before WELCOME).
func (c *Conn) User() string {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.user
}

// Device is the device id from HELLO.
func (c *Conn) Device() string {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.device
}

// ID numbers connections in accept order, from 1.
func (c *Conn) ID() uint64 { return c.id }

// Write sends one frame (one WebSocket binary message). Errors are ignored:
// a broken connection is noticed by its reader.
func (c *Conn) Write(frame []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return
	}
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write(wsconn.Encode(ws.OpBinary, frame, false)); err != nil {
		c.closed = true
		c.nc.Close()
	}
}

// Close drops the connection abruptly (no close frame), like a crashed
// server or a broken network.
func (c *Conn) Close() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.closed = true
	c.nc.Close()
}

// Goaway sends GOAWAY and closes the connection.
func (c *Conn) Goaway(code wire.Code, reconnectAfter time.Duration, message string) {
	g := wire.Goaway{Code: code, ReconnectAfterMS: uint64(reconnectAfter / time.Millisecond), Message: []byte(message)}
	c.Write(g.Append(nil, 0))
	c.Close()
}

// Error sends an ERROR frame.
func (c *Conn) Error(e wire.Error) { c.Write(e.Append(nil, 0)) }

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	nc, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.nextConn++
	c := &Conn{s: s, id: s.nextConn, nc: nc}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
		s.wg.Done()
	}()
	rd := wsconn.NewReader(rw.Reader, ws.StateServerSide, wire.MaxFrameSize, func(f []byte) {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		if !c.closed {
			c.nc.Write(f)
		}
	})
	var dec wire.Decoder
	for {
		frame, err := rd.Next()
		if err != nil {
			return
		}
		t, _, _, perr := wire.ParseHeader(frame)
		s.mu.Lock()
		s.log = append(s.log, Logged{Conn: c, Type: t, Frame: frame})
		hook := s.hook
		s.mu.Unlock()
		if perr == nil && hook != nil && hook(c, t, frame) {
			continue
		}
		if !s.handle(c, &dec, frame) {
			return
		}
	}
}

// HandleDefault applies the default server behaviour to a client frame; a
// Hook may call it to let a frame through and then misbehave.
func (s *Server) HandleDefault(c *Conn, frame []byte) {
	var dec wire.Decoder
	if !s.handle(c, &dec, frame) {
		c.Close()
	}
}

// handle processes one client frame; false closes the connection.
func (s *Server) handle(c *Conn, dec *wire.Decoder, frame []byte) bool {
	t, _, err := dec.Decode(frame)
	if err != nil {
		code := wire.CodeOf(err)
		c.Error(wire.Error{Code: code, RefType: t, Message: []byte(err.Error())})
		return !code.Fatal()
	}
	if c.user == "" && t != wire.TypeHello {
		c.Error(wire.Error{Code: wire.CodeHelloRequired, RefType: t})
		return false
	}
	switch t {
	case wire.TypeHello:
		return s.hello(c, &dec.Hello)
	case wire.TypeSend:
		s.send(c, &dec.Send)
	case wire.TypeResume:
		s.resume(c, &dec.Resume)
	case wire.TypeHistory:
		s.history(c, &dec.History)
	case wire.TypeReceipt:
		s.receipt(c, &dec.Receipt)
	case wire.TypeOpenDirect:
		s.openDirect(c, &dec.OpenDirect)
	case wire.TypePing:
		p := wire.Pong{Nonce: dec.Ping.Nonce}
		c.Write(p.Append(nil, 0))
	default:
		c.Error(wire.Error{Code: wire.CodeUnexpectedType, RefType: t})
	}
	return true
}

func (s *Server) hello(c *Conn, h *wire.Hello) bool {
	if c.user != "" {
		c.Error(wire.Error{Code: wire.CodeDuplicateHello, RefType: wire.TypeHello})
		return true
	}
	user, code := s.checkToken(string(h.Token))
	if code != 0 {
		c.Error(wire.Error{Code: code, RefType: wire.TypeHello, Message: []byte(code.String())})
		return false
	}
	if h.MinVersion > wire.Version || h.MaxVersion < wire.Version {
		c.Error(wire.Error{Code: wire.CodeUnsupportedVers, RefType: wire.TypeHello})
		return false
	}
	caps := uint64(0)
	if s.opts.Compression {
		caps = h.Caps & wire.CapZstd
	}
	s.mu.Lock()
	c.user, c.device, c.caps = user, string(h.DeviceID), caps
	s.mu.Unlock()
	w := wire.Welcome{
		Version: wire.Version, Caps: caps, HeartbeatMS: s.opts.HeartbeatMS,
		IdleTimeoutMS: s.opts.IdleTimeoutMS, MaxFrame: wire.MaxFrameSize,
		ServerTimeMS: uint64(time.Now().UnixMilli()), UserID: []byte(user), DeviceID: h.DeviceID,
	}
	c.Write(w.Append(nil, 0))
	select {
	case s.welcomed <- c:
	default:
	}
	return true
}

func (s *Server) conv(c *Conn, id uint64, ref wire.Type, req uint64, cmid []byte) *conversation {
	s.mu.Lock()
	cv := s.convs[id]
	s.mu.Unlock()
	code := wire.Code(0)
	switch {
	case cv == nil:
		code = wire.CodeConvNotFound
	case !cv.member(c.user):
		code = wire.CodeNotMember
	}
	if code != 0 {
		c.Error(wire.Error{Code: code, RefType: ref, ReqID: req, ConvID: id, ClientMsgID: cmid})
		return nil
	}
	return cv
}

func (s *Server) send(c *Conn, m *wire.Send) {
	cv := s.conv(c, m.ConvID, wire.TypeSend, 0, m.ClientMsgID)
	if cv == nil {
		return
	}
	if len(m.ClientMsgID) == 0 {
		c.Error(wire.Error{Code: wire.CodeInvalidArgument, RefType: wire.TypeSend, ConvID: m.ConvID})
		return
	}
	s.mu.Lock()
	stored, dup := s.storeLocked(cv, c.user, c.device, string(m.ClientMsgID), m.Kind, m.Body)
	s.mu.Unlock()
	a := wire.Ack{
		ClientMsgID: m.ClientMsgID, ConvID: stored.ConvID, MessageID: stored.MessageID,
		Seq: stored.Seq, ServerTimeMS: stored.ServerTimeMS,
	}
	c.Write(a.Append(nil, 0))
	if !dup {
		s.fanout(stored, c)
	}
}

func (s *Server) resume(c *Conn, r *wire.Resume) {
	from := map[uint64]uint64{}
	for _, cur := range r.Cursors {
		from[cur.ConvID] = cur.LastSeq
	}
	// As docs/protocol.md §6.3: listed conversations replay after their
	// cursor, oldest first, capped (truncated); others their newest few.
	s.mu.Lock()
	var frames [][]byte
	var convs, msgs uint64
	truncated := false
	ids := make([]uint64, 0, len(s.convs))
	for id, cv := range s.convs {
		if cv.member(c.user) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		cv := s.convs[id]
		last, listed := from[id]
		if last >= uint64(len(cv.msgs)) {
			continue
		}
		pend := cv.msgs[last:]
		switch {
		case !listed && len(pend) > s.opts.ResumeNewCap:
			pend = pend[len(pend)-s.opts.ResumeNewCap:]
		case listed && len(pend) > s.opts.ResumeCap:
			pend = pend[:s.opts.ResumeCap]
			truncated = true
		}
		convs++
		for _, m := range pend {
			frames = append(frames, m.Frame(wire.FlagReplay))
			msgs++
		}
	}
	s.mu.Unlock()
	for _, f := range frames {
		c.Write(f)
	}
	done := wire.Resumed{ReqID: r.ReqID, Conversations: convs, Messages: msgs, Truncated: truncated}
	c.Write(done.Append(nil, 0))
}

func (s *Server) history(c *Conn, h *wire.History) {
	cv := s.conv(c, h.ConvID, wire.TypeHistory, h.ReqID, nil)
	if cv == nil {
		return
	}
	s.mu.Lock()
	n := uint64(len(cv.msgs))
	before := h.BeforeSeq
	if before == 0 || before > n+1 {
		before = n + 1
	}
	limit := min(h.Limit, wire.MaxHistoryLimit)
	lo := uint64(1)
	if before > limit {
		lo = before - limit
	}
	var frames [][]byte
	for seq := lo; seq < before; seq++ {
		frames = append(frames, cv.msgs[seq-1].Frame(wire.FlagReplay))
	}
	s.mu.Unlock()
	for _, f := range frames {
		c.Write(f)
	}
	end := wire.HistoryEnd{ReqID: h.ReqID, ConvID: h.ConvID, Count: uint64(len(frames)), HasMore: lo > 1 && len(frames) > 0}
	c.Write(end.Append(nil, 0))
}

func (s *Server) receipt(c *Conn, r *wire.Receipt) {
	cv := s.conv(c, r.ConvID, wire.TypeReceipt, 0, nil)
	if cv == nil {
		return
	}
	s.mu.Lock()
	if r.UpToSeq > uint64(len(cv.msgs)) {
		s.mu.Unlock()
		c.Error(wire.Error{Code: wire.CodeSeqBeyondLatest, RefType: wire.TypeReceipt, ConvID: r.ConvID})
		return
	}
	p := cv.pointers[c.user]
	if p == nil {
		p = new([3]uint64)
		cv.pointers[c.user] = p
	}
	kinds := []wire.ReceiptKind{r.Kind}
	if r.Kind == wire.ReceiptRead {
		kinds = []wire.ReceiptKind{wire.ReceiptDelivered, wire.ReceiptRead} // read implies delivered
	}
	var frames [][]byte
	for _, k := range kinds {
		if r.UpToSeq > p[k] {
			p[k] = r.UpToSeq
			out := wire.Receipt{ConvID: r.ConvID, Kind: k, UpToSeq: r.UpToSeq, User: []byte(c.user)}
			frames = append(frames, out.Append(nil, 0))
		}
	}
	s.mu.Unlock()
	for _, o := range s.memberConns(r.ConvID, func(o *Conn) bool { return o == c }) {
		for _, f := range frames {
			o.Write(f)
		}
	}
}

func (s *Server) openDirect(c *Conn, o *wire.OpenDirect) {
	peer := string(o.Peer)
	if peer == "" || peer == c.user {
		c.Error(wire.Error{Code: wire.CodeInvalidArgument, RefType: wire.TypeOpenDirect, ReqID: o.ReqID})
		return
	}
	s.mu.Lock()
	id := s.directLocked(c.user, peer)
	cv := s.convs[id]
	out := wire.Conv{ReqID: o.ReqID, ConvID: id, Kind: cv.kind, LastSeq: uint64(len(cv.msgs))}
	for _, m := range cv.members {
		out.Members = append(out.Members, []byte(m))
	}
	s.mu.Unlock()
	c.Write(out.Append(nil, 0))
}
