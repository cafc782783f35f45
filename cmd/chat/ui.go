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
	Timeout  time.Duration  // for requests (/open, /history, /inbox...); default 15s
	// Inbox prints the inbox once the first connection is up.
	Inbox bool
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
	conv   uint64            // current conversation, 0 if none
	peer   string            // its peer (direct conversations)
	group  *sdk.Conversation // the current conversation when it is a group
	labels map[uint64]string
	groups map[uint64]bool // conversations known to be groups
	inbox  []uint64        // conversations of the last /inbox, in its order

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
		groups: map[uint64]bool{},
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
	inboxAtStart := opts.Inbox
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
			if _, ok := ev.(sdk.Connected); ok && inboxAtStart {
				inboxAtStart = false
				u.showInbox(ctx)
			}
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
		switch {
		case u.conv == 0:
			u.printf("* no conversation open; use /open <user>\n")
		case u.group != nil && u.group.MemberTotal == 0:
			u.printf("* in group %q (conversation %d)\n", u.group.Name, u.conv)
		case u.group != nil:
			g := u.group
			u.printf("* in group %q (conversation %d): %d members: %s; admins: %s\n",
				g.Name, g.ID, g.MemberTotal, strings.Join(g.Members, ", "), strings.Join(g.Admins, ", "))
		default:
			u.printf("* talking to %s (conversation %d)\n", u.peer, u.conv)
		}
	case "/inbox":
		u.showInbox(ctx)
	case "/go":
		if len(args) != 1 {
			u.printf("* usage: /go <number from /inbox>\n")
			break
		}
		u.goTo(ctx, args[0])
	case "/group":
		if len(args) < 1 {
			u.printf("* usage: /group <name> [user...]\n")
			break
		}
		u.createGroup(ctx, args[0], args[1:])
	case "/add", "/remove", "/promote", "/demote":
		if len(args) == 0 {
			u.printf("* usage: %s <user>...\n", cmd)
			break
		}
		op := map[string]wire.GroupOp{"/add": wire.GroupAdd, "/remove": wire.GroupRemove, "/promote": wire.GroupPromote, "/demote": wire.GroupDemote}[cmd]
		u.changeGroup(ctx, op, "", args)
	case "/rename":
		name := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "/rename"))
		if name == "" {
			u.printf("* usage: /rename <new name>\n")
			break
		}
		u.changeGroup(ctx, wire.GroupRename, name, nil)
	case "/leave":
		u.changeGroup(ctx, wire.GroupLeave, "", nil)
	case "/help":
		u.printf("* /open <user>          talk to <user>\n" +
			"* /inbox                your conversations, latest first, with unread counts\n" +
			"* /go <n>               switch to conversation n of the last /inbox\n" +
			"* /group <name> [user…] create a group and switch to it\n" +
			"* /add, /remove, /promote, /demote <user…>   change the current group (admins)\n" +
			"* /rename <name>        rename the current group\n" +
			"* /leave                leave the current group\n" +
			"* /history [n]          show n older messages (default 20)\n" +
			"* /who                  show who you are talking to\n" +
			"* /quit                 leave\n" +
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
	u.conv, u.peer, u.group = conv.ID, peer, nil
	u.labels[conv.ID] = peer
	u.printf("* talking to %s (conversation %d)\n", peer, conv.ID)
	// Whatever of it was already printed has been seen.
	if s := u.latest[conv.ID]; s > 0 {
		u.c.MarkRead(conv.ID, s)
	}
}

// showInbox prints the user's conversations, latest activity first, and
// remembers their order for /go.
func (u *ui) showInbox(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, u.opts.Timeout)
	defer cancel()
	page, err := u.c.Inbox(ctx, "", maxInboxShown)
	if err != nil {
		u.printf("* inbox: %v\n", err)
		return
	}
	if len(page.Entries) == 0 {
		u.printf("* inbox: no conversations yet; /open <user> or /group <name> <user>...\n")
		return
	}
	u.printf("* inbox:\n")
	u.inbox = u.inbox[:0]
	for i, e := range page.Entries {
		label := e.Peer
		if e.Group {
			label = fmt.Sprintf("%s (group, %d members)", e.Name, e.MemberCount)
			u.labels[e.Conv], u.groups[e.Conv] = e.Name, true
		} else {
			u.labels[e.Conv] = e.Peer
		}
		u.inbox = append(u.inbox, e.Conv)
		unread := ""
		if e.Unread > 0 {
			unread = fmt.Sprintf(" (%d unread)", e.Unread)
		}
		last := ""
		if m := e.Last; m != nil {
			who := m.Sender
			if who == u.me {
				who = "you"
			}
			last = fmt.Sprintf(" [%s] %s: %s", m.ServerTime.In(u.opts.Location).Format("15:04"), who, quote(bodyText(m)))
		}
		u.printf("* %2d. %s%s%s\n", i+1, label, unread, last)
	}
	if page.Next != "" {
		u.printf("* (only the latest %d shown)\n", maxInboxShown)
	}
}

// maxInboxShown bounds /inbox to one page.
const maxInboxShown = 50

// goTo switches to conversation n of the last /inbox.
func (u *ui) goTo(ctx context.Context, arg string) {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 || n > len(u.inbox) {
		u.printf("* no conversation %s; /inbox lists them\n", arg)
		return
	}
	conv := u.inbox[n-1]
	if !u.groups[conv] {
		u.open(ctx, u.labels[conv])
		return
	}
	// The inbox entry's name is enough to talk in it; /who lists members
	// once a change has returned the group.
	u.conv, u.peer = conv, ""
	u.group = &sdk.Conversation{ID: conv, Kind: wire.ConvGroup, Name: u.labels[conv]}
	u.printf("* in group %q (conversation %d)\n", u.labels[conv], conv)
	if s := u.latest[conv]; s > 0 {
		u.c.MarkRead(conv, s)
	}
}

func (u *ui) createGroup(ctx context.Context, name string, members []string) {
	ctx, cancel := context.WithTimeout(ctx, u.opts.Timeout)
	defer cancel()
	g, err := u.c.CreateGroup(ctx, name, members)
	if err != nil {
		u.printf("* cannot create the group: %v\n", err)
		return
	}
	u.enterGroup(&g)
}

func (u *ui) changeGroup(ctx context.Context, op wire.GroupOp, name string, users []string) {
	if u.group == nil {
		u.printf("* not in a group; /group <name> creates one, /inbox and /go switch\n")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, u.opts.Timeout)
	defer cancel()
	g, err := u.c.ChangeGroup(ctx, u.conv, op, name, users)
	if err != nil {
		u.printf("* group change refused: %v\n", err)
		return
	}
	if op == wire.GroupLeave {
		u.printf("* you left %q\n", u.group.Name)
		u.conv, u.group = 0, nil
		return
	}
	u.enterGroup(&g)
}

func (u *ui) enterGroup(g *sdk.Conversation) {
	u.conv, u.peer, u.group = g.ID, "", g
	u.labels[g.ID], u.groups[g.ID] = g.Name, true
	u.printf("* in group %q (conversation %d, %d members)\n", g.Name, g.ID, g.MemberTotal)
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
	var ev wire.GroupEvent
	if m.Kind == wire.KindSystem && ev.Decode(m.Body) == nil {
		u.groups[m.Conv] = true
		if ev.Op == wire.GroupCreated || ev.Op == wire.GroupRename {
			u.labels[m.Conv] = string(ev.Name)
			if u.group != nil && u.group.ID == m.Conv {
				u.group.Name = string(ev.Name)
			}
		}
	}
	if m.Sender != u.me && u.labels[m.Conv] == "" && !u.groups[m.Conv] {
		u.labels[m.Conv] = m.Sender
	}
	label := ""
	if m.Conv != u.conv {
		switch l := u.labels[m.Conv]; {
		case l == "":
			label = fmt.Sprintf("(conversation %d) ", m.Conv)
		case u.groups[m.Conv]:
			label = "(in " + l + ") "
		default:
			label = "(with " + l + ") "
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
	u.printf("[%s] %s%s: %s\n", m.ServerTime.In(u.opts.Location).Format("15:04"), label, who, bodyText(&m))
}

func bodyText(m *sdk.Message) string {
	switch m.Kind {
	case wire.KindText:
		return string(m.Body)
	case wire.KindSystem:
		return "* " + systemText(m.Body)
	}
	return fmt.Sprintf("<%d bytes>", len(m.Body))
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
