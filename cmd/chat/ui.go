package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/chatd-dev/chatd/sdk"
	"github.com/chatd-dev/chatd/wire"
)

// uiOptions configure run.
type uiOptions struct {
	User     string         // who we are (until the server says otherwise)
	Peer     string         // open the direct conversation with Peer at start
	Location *time.Location // for timestamps; nil: local time
	Timeout  time.Duration  // for /open and /history; default 15s
}

// Message delivery states of our own messages, in order.
const (
	statePending = iota
	stateSent
	stateDelivered
	stateRead
	stateFailed
)

type ownMsg struct {
	conv  uint64
	text  string
	seq   uint64
	state int
}

// ui is the line-oriented chat terminal. All its state is owned by the
// goroutine running run.
type ui struct {
	c    *sdk.Client
	out  io.Writer
	opts uiOptions

	me     string
	conv   uint64 // current conversation, 0 if none
	peer   string // its peer
	labels map[uint64]string

	own    map[string]*ownMsg   // by client_msg_id, until read or failed
	peers  map[uint64][3]uint64 // conv -> other members' max pointers by receipt kind
	lowest map[uint64]uint64    // lowest seq printed per conversation (for /history)
	latest map[uint64]uint64    // highest seq printed per conversation
	online int                  // 0 unknown, 1 connected, -1 reconnecting
}

// run reads commands from in and prints the chat to out until /quit, the
// end of in, ctx ending, or the client closing. c must be started (or about
// to be); run does not close it.
func run(ctx context.Context, c *sdk.Client, in io.Reader, out io.Writer, opts uiOptions) error {
	if opts.Location == nil {
		opts.Location = time.Local
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 15 * time.Second
	}
	u := &ui{
		c: c, out: out, opts: opts, me: opts.User,
		labels: map[uint64]string{},
		own:    map[string]*ownMsg{},
		peers:  map[uint64][3]uint64{},
		lowest: map[uint64]uint64{},
		latest: map[uint64]uint64{},
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), wire.MaxBodySize)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()

	u.printf("* chatd as %s; /help for commands\n", u.me)
	openAtStart := opts.Peer
	var early []string // lines typed before openAtStart was opened
	events := c.Events()
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok {
				return nil
			}
			if openAtStart != "" && !isQuit(line) {
				// Typed ahead: wait for the conversation to open.
				early = append(early, line)
				continue
			}
			if quit := u.command(ctx, line); quit {
				return nil
			}
		case ev, ok := <-events:
			if !ok {
				return errors.New("client closed")
			}
			u.event(ev)
			if _, ok := ev.(sdk.Connected); ok && openAtStart != "" {
				// Once connected, so that "* connected" comes first.
				u.open(ctx, openAtStart)
				openAtStart = ""
				for _, line := range early {
					if quit := u.command(ctx, line); quit {
						return nil
					}
				}
				early = nil
			}
		}
	}
}

func (u *ui) printf(format string, args ...any) {
	fmt.Fprintf(u.out, format, args...)
}

// command handles one input line and reports whether to quit.
func (u *ui) command(ctx context.Context, line string) bool {
	line = strings.TrimRight(line, "\r")
	if strings.TrimSpace(line) == "" {
		return false
	}
	if !strings.HasPrefix(line, "/") || strings.HasPrefix(line, "//") {
		u.send(ctx, strings.TrimPrefix(line, "/"))
		return false
	}
	fields := strings.Fields(line)
	switch cmd, args := fields[0], fields[1:]; cmd {
	case "/quit", "/exit":
		return true // see isQuit
	case "/open":
		if len(args) != 1 {
			u.printf("* usage: /open <user>\n")
			break
		}
		u.open(ctx, args[0])
	case "/history":
		n := 20
		if len(args) > 0 {
			v, err := strconv.Atoi(args[0])
			if err != nil || v < 1 || v > wire.MaxHistoryLimit {
				u.printf("* usage: /history [1..%d]\n", wire.MaxHistoryLimit)
				break
			}
			n = v
		}
		u.history(ctx, n)
	case "/who":
		if u.conv == 0 {
			u.printf("* no conversation open; use /open <user>\n")
		} else {
			u.printf("* talking to %s (conversation %d)\n", u.peer, u.conv)
		}
	case "/help":
		u.printf("* /open <user>   talk to <user>\n" +
			"* /history [n]   show n older messages (default 20)\n" +
			"* /who           show who you are talking to\n" +
			"* /quit          leave\n" +
			"* anything else is sent to the current conversation (start with // to send a leading /)\n")
	default:
		u.printf("* unknown command %s; try /help\n", cmd)
	}
	return false
}

func isQuit(line string) bool {
	f := strings.Fields(line)
	return len(f) > 0 && (f[0] == "/quit" || f[0] == "/exit")
}

func (u *ui) open(ctx context.Context, peer string) {
	ctx, cancel := context.WithTimeout(ctx, u.opts.Timeout)
	defer cancel()
	conv, err := u.c.OpenDirect(ctx, peer)
	if err != nil {
		u.printf("* cannot open a conversation with %s: %v\n", peer, err)
		return
	}
	u.conv, u.peer = conv.ID, peer
	u.labels[conv.ID] = peer
	u.printf("* talking to %s (conversation %d)\n", peer, conv.ID)
	// Whatever of it was already printed has been seen.
	if s := u.latest[conv.ID]; s > 0 {
		u.c.MarkRead(conv.ID, s)
	}
}

func (u *ui) send(ctx context.Context, text string) {
	if u.conv == 0 {
		u.printf("* no conversation open; use /open <user>\n")
		return
	}
	id, err := u.c.Send(ctx, u.conv, wire.KindText, []byte(text))
	if err != nil {
		u.printf("* not sent: %v\n", err)
		return
	}
	u.own[id] = &ownMsg{conv: u.conv, text: text}
	u.printf("… you: %s\n", text)
}

func (u *ui) history(ctx context.Context, n int) {
	if u.conv == 0 {
		u.printf("* no conversation open; use /open <user>\n")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, u.opts.Timeout)
	defer cancel()
	msgs, more, err := u.c.History(ctx, u.conv, u.lowest[u.conv], n)
	if err != nil {
		u.printf("* history: %v\n", err)
		return
	}
	if len(msgs) == 0 {
		u.printf("* no older messages\n")
		return
	}
	u.printf("* %d earlier message(s):\n", len(msgs))
	for _, m := range msgs {
		u.printMessage(m, "")
	}
	if l := u.lowest[u.conv]; l == 0 || msgs[0].Seq < l {
		u.lowest[u.conv] = msgs[0].Seq
	}
	if !more {
		u.printf("* (start of the conversation)\n")
	}
}

func (u *ui) event(ev sdk.Event) {
	switch ev := ev.(type) {
	case sdk.Message:
		u.message(ev)
	case sdk.Ack:
		if m := u.own[ev.ClientMsgID]; m != nil {
			m.seq = ev.Seq
			u.advance(m, stateSent)
			u.applyPointers(m.conv)
		}
	case sdk.Receipt:
		if ev.User == u.me {
			return // our own other device
		}
		p := u.peers[ev.Conv]
		if int(ev.Kind) < len(p) && ev.UpToSeq > p[ev.Kind] {
			p[ev.Kind] = ev.UpToSeq
			u.peers[ev.Conv] = p
			u.applyPointers(ev.Conv)
		}
	case sdk.SendFailed:
		if m := u.own[ev.ClientMsgID]; m != nil {
			u.printf("  ✗ not sent (%s): %s\n", ev.Code, quote(m.text))
			delete(u.own, ev.ClientMsgID)
		}
	case sdk.Connected:
		u.me = ev.UserID
		if u.online != 1 {
			u.printf("* connected\n")
		}
		u.online = 1
	case sdk.Disconnected:
		if u.online != -1 {
			u.printf("* reconnecting… (%v)\n", ev.Err)
		}
		u.online = -1
	}
}

func (u *ui) message(m sdk.Message) {
	if m.Sender != u.me && u.labels[m.Conv] == "" {
		u.labels[m.Conv] = m.Sender
	}
	label := ""
	if m.Conv != u.conv {
		if l := u.labels[m.Conv]; l != "" {
			label = "(with " + l + ") "
		} else {
			label = fmt.Sprintf("(conversation %d) ", m.Conv)
		}
	}
	u.printMessage(m, label)
	if l := u.lowest[m.Conv]; l == 0 || m.Seq < l {
		u.lowest[m.Conv] = m.Seq
	}
	u.latest[m.Conv] = max(u.latest[m.Conv], m.Seq)
	if m.Conv == u.conv {
		u.c.MarkRead(m.Conv, m.Seq)
	}
}

func (u *ui) printMessage(m sdk.Message, label string) {
	who := m.Sender
	if who == u.me {
		who = "you"
		if m.SenderDevice != u.c.DeviceID() {
			who += " (" + m.SenderDevice + ")"
		}
	}
	var body string
	switch m.Kind {
	case wire.KindText:
		body = string(m.Body)
	case wire.KindSystem:
		body = "* " + systemText(m.Body)
	default:
		body = fmt.Sprintf("<%d bytes>", len(m.Body))
	}
	u.printf("[%s] %s%s: %s\n", m.ServerTime.In(u.opts.Location).Format("15:04"), label, who, body)
}

// applyPointers upgrades our messages in conv that the other members'
// pointers have passed.
func (u *ui) applyPointers(conv uint64) {
	p := u.peers[conv]
	var mine []*ownMsg
	for _, m := range u.own {
		if m.conv == conv && m.seq > 0 {
			mine = append(mine, m)
		}
	}
	slices.SortFunc(mine, func(a, b *ownMsg) int { return cmp.Compare(a.seq, b.seq) })
	for _, m := range mine {
		switch {
		case m.seq <= p[wire.ReceiptRead]:
			u.advance(m, stateRead)
		case m.seq <= p[wire.ReceiptDelivered]:
			u.advance(m, stateDelivered)
		}
	}
	for id, m := range u.own {
		if m.state == stateRead {
			delete(u.own, id)
		}
	}
}

func (u *ui) advance(m *ownMsg, to int) {
	if to <= m.state {
		return
	}
	m.state = to
	switch to {
	case stateSent:
		u.printf("  ✓ sent: %s\n", quote(m.text))
	case stateDelivered:
		u.printf("  ✓✓ delivered: %s\n", quote(m.text))
	case stateRead:
		u.printf("  ✓✓ read: %s\n", quote(m.text))
	}
}

// quote shortens a message for a status line.
func quote(s string) string {
	const max = 30
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		s = string(r[:max-1]) + "…"
	}
	return strconv.Quote(s)
}

// systemText renders a group's system message (a wire.GroupEvent).
func systemText(b []byte) string {
	var ev wire.GroupEvent
	if err := ev.Decode(b); err != nil {
		return string(b)
	}
	users := make([]string, len(ev.Users))
	for i, u := range ev.Users {
		users[i] = string(u)
	}
	list := strings.Join(users, ", ")
	switch ev.Op {
	case wire.GroupCreated:
		return fmt.Sprintf("%s created %q with %s", ev.Actor, ev.Name, list)
	case wire.GroupAdd:
		return fmt.Sprintf("%s added %s", ev.Actor, list)
	case wire.GroupRemove:
		return fmt.Sprintf("%s removed %s", ev.Actor, list)
	case wire.GroupLeave:
		if list != "" {
			return fmt.Sprintf("%s left; %s is now an admin", ev.Actor, list)
		}
		return fmt.Sprintf("%s left", ev.Actor)
	case wire.GroupRename:
		return fmt.Sprintf("%s renamed the group to %q", ev.Actor, ev.Name)
	case wire.GroupPromote:
		return fmt.Sprintf("%s made %s admin", ev.Actor, list)
	case wire.GroupDemote:
		return fmt.Sprintf("%s removed %s as admin", ev.Actor, list)
	}
	return string(b)
}
