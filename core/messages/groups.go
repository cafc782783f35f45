package messages

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatd-dev/chatd/core/auth"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// Groups.
//
// A group's description (name, members, admins) changes only through its
// own log: CREATE_GROUP writes the group with its first message, and every
// GROUP_CHANGE that changes something is a system message (a
// wire.GroupEvent body) committed in the same atomic write as the new
// description (store.GroupUpdate). So every device sees changes in order
// with the messages around them, and a SEND handled after a removal in the
// same batch already sees the new member list.
//
// GROUP_CHANGE is keyed by the group on chat.inbound, so the group's owner
// applies it in order with the group's messages. CREATE_GROUP is keyed by
// the creator (the group has no id yet); the creating core writes seq 1
// itself: no one else can know the id before the CONV answer, and the seq
// fence would refuse a second writer anyway.
//
// Re-delivery (a crash before the offset commit) must not apply a request
// twice. The system message's client_msg_id is the request's position on
// chat.inbound (groupOpID), so dedupe finds an applied request and it is
// answered again instead; a created group's id is derived from the same
// position, so re-creating finds the group that exists.

// reservedCMIDPrefix starts the client_msg_ids the server writes; a SEND
// may not use it, so no client message can pre-empt a system message's
// dedupe entry.
const reservedCMIDPrefix = "~"

// DefaultMaxGroupSize is Config.MaxGroupSize's default.
const DefaultMaxGroupSize = 1024

// DefaultPullAbove is Config.PullAbove's default: groups up to the default
// size cap are pushed to every member; only a deployment that raises the
// cap gets channels (groups with more members than this), which use the
// pull model (docs/design.md, "Channels: the pull model").
const DefaultPullAbove = DefaultMaxGroupSize

// groupOpID is the client_msg_id of the system message a group request
// writes: the request's position on chat.inbound.
func groupOpID(rec *kgo.Record) string {
	return fmt.Sprintf("%sg/%d/%d", reservedCMIDPrefix, rec.Partition, rec.Offset)
}

// GroupEventID reports whether cmid is the client_msg_id of a group's
// system message (written by groupOpID). SEND refuses both the system kind
// and the reserved prefix, so only the core writes messages that pass.
func GroupEventID(cmid []byte) bool {
	return len(cmid) > 3 && string(cmid[:3]) == reservedCMIDPrefix+"g/"
}

// groupID is the id of the group a CREATE_GROUP record creates: a hash of
// the creator and the record's position and timestamp (the timestamp keeps
// ids apart should the topic be recreated and offsets restart). 63 bits,
// never 0, like DirectID, with which a collision is as unlikely as between
// two direct conversations.
func groupID(user string, rec *kgo.Record) uint64 {
	h := sha256.New()
	h.Write([]byte("chatd/group\x00"))
	h.Write([]byte(user))
	var b [24]byte
	binary.BigEndian.PutUint64(b[0:], uint64(rec.Partition))
	binary.BigEndian.PutUint64(b[8:], uint64(rec.Offset))
	binary.BigEndian.PutUint64(b[16:], uint64(rec.Timestamp.UnixMilli()))
	h.Write(b[:])
	var sum [sha256.Size]byte
	id := binary.BigEndian.Uint64(h.Sum(sum[:0])) >> 1
	if id == 0 {
		id = 1
	}
	return id
}

// validGroupName reports whether name can name a group.
func validGroupName(name []byte) bool {
	return len(name) > 0 && len(name) <= wire.MaxGroupNameLen && utf8.Valid(name)
}

func (p *Processor) createGroup(ctx context.Context, env *wire.Envelope, rec *kgo.Record, cg *wire.CreateGroup) (*pendingAck, error) {
	user := string(env.User)
	if !validGroupName(cg.Name) {
		p.queueError(env, wire.CodeInvalidArgument, wire.TypeCreateGroup, cg.ReqID, 0, nil, "name must be 1..128 bytes of UTF-8")
		return nil, nil
	}
	members := make([]string, 0, len(cg.Members)+1)
	members = append(members, user)
	for _, m := range cg.Members {
		if !auth.ValidUserID(string(m)) {
			p.queueError(env, wire.CodeInvalidArgument, wire.TypeCreateGroup, cg.ReqID, 0, nil, "bad member id")
			return nil, nil
		}
		members = append(members, string(m))
	}
	slices.Sort(members)
	members = slices.Compact(members)
	if len(members) > p.cfg.MaxGroupSize {
		p.queueError(env, wire.CodeGroupFull, wire.TypeCreateGroup, cg.ReqID, 0, nil,
			fmt.Sprintf("%d members, the cap is %d", len(members), p.cfg.MaxGroupSize))
		return nil, nil
	}
	id, opID := groupID(user, rec), groupOpID(rec)
	c, err := p.deps.Store.Conversation(ctx, id)
	switch {
	case err == nil:
		// Re-delivered: the group exists. Answer again, and re-emit its
		// first message if this process never did.
		return p.answerApplied(ctx, env, cg.ReqID, &c, user, opID)
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("create group: %w", err)
	}
	now := uint64(p.cfg.Now().UnixMilli())
	conv := store.Conversation{ID: id, Kind: wire.ConvGroup, Members: members, CreatedMS: now,
		Name: string(cg.Name), Admins: []string{user}}
	p.batch.Conversations = append(p.batch.Conversations, conv)
	ev := wire.GroupEvent{Op: wire.GroupCreated, Actor: env.User, Name: cg.Name}
	for _, m := range members {
		if m != user {
			ev.Users = append(ev.Users, []byte(m))
		}
	}
	a := p.systemMessage(id, 1, env, opID, &ev)
	p.queueFrame(env, EncodeConv(nil, cg.ReqID, &conv, 1))
	return a, nil
}

// answerApplied answers a group request that was already applied (found
// by its system message's client_msg_id, or by the group's id) with the
// group as it is now, and re-emits the system message if this process has
// not emitted it (the original emit may have been lost in a crash).
func (p *Processor) answerApplied(ctx context.Context, env *wire.Envelope, reqID uint64, c *store.Conversation, user, opID string) (*pendingAck, error) {
	last, err := p.deps.Store.LastSeq(ctx, c.ID)
	if err != nil {
		return nil, fmt.Errorf("last seq: %w", err)
	}
	p.queueFrame(env, EncodeConv(nil, reqID, c, last))
	old, found, err := p.deps.Store.LookupClientMsg(ctx, c.ID, user, opID)
	if err != nil {
		return nil, fmt.Errorf("lookup group request: %w", err)
	}
	if !found {
		return nil, nil
	}
	p.cfg.Metrics.Deduped.Inc()
	if _, emitted := p.emitted[old.MessageID]; emitted {
		return nil, nil
	}
	return &pendingAck{existing: &old, emit: true, noAck: true}, nil
}

// systemMessage appends a group's system message at seq to the batch and
// returns its pending emit (no ACK: the request is answered with a CONV).
func (p *Processor) systemMessage(conv, seq uint64, env *wire.Envelope, opID string, ev *wire.GroupEvent) *pendingAck {
	p.batch.Messages = append(p.batch.Messages, store.Message{
		ConvID:       conv,
		MessageID:    p.deps.IDs.Next(),
		Seq:          seq,
		ServerTimeMS: uint64(p.cfg.Now().UnixMilli()),
		Sender:       string(env.User),
		SenderDevice: string(env.Device),
		ClientMsgID:  opID,
		Kind:         wire.KindSystem,
		Body:         ev.Append(nil),
	})
	p.impliedRead(conv, string(env.User), seq)
	return &pendingAck{idx: len(p.batch.Messages) - 1, emit: true, noAck: true}
}

func (p *Processor) groupChange(ctx context.Context, env *wire.Envelope, rec *kgo.Record, gc *wire.GroupChange) (*pendingAck, error) {
	fail := func(code wire.Code, msg string) (*pendingAck, error) {
		p.queueError(env, code, wire.TypeGroupChange, gc.ReqID, gc.ConvID, nil, msg)
		return nil, nil
	}
	cs, err := p.conv(ctx, gc.ConvID)
	if errors.Is(err, store.ErrNotFound) {
		return fail(wire.CodeConvNotFound, "no such conversation")
	}
	if err != nil {
		return nil, err
	}
	if cs.conv.Kind != wire.ConvGroup {
		return fail(wire.CodeInvalidArgument, "not a group")
	}
	user, opID := string(env.User), groupOpID(rec)
	old, found, err := p.deps.Store.LookupClientMsg(ctx, gc.ConvID, user, opID)
	if err != nil {
		return nil, fmt.Errorf("lookup group request: %w", err)
	}
	if found {
		// Re-delivered after it was applied (and possibly after later
		// changes): answer with the group as it is now.
		p.queueFrame(env, EncodeConv(nil, gc.ReqID, &cs.conv, cs.lastSeq))
		p.cfg.Metrics.Deduped.Inc()
		if _, emitted := p.emitted[old.MessageID]; emitted {
			return nil, nil
		}
		return &pendingAck{existing: &old, emit: true, noAck: true}, nil
	}
	if !isMember(&cs.conv, user) {
		return fail(wire.CodeNotMember, "not a member")
	}
	admin := slices.Contains(cs.conv.Admins, user)
	users := make([]string, 0, len(gc.Users))
	for _, u := range gc.Users {
		if !auth.ValidUserID(string(u)) {
			return fail(wire.CodeInvalidArgument, "bad user id")
		}
		users = append(users, string(u))
	}
	slices.Sort(users)
	users = slices.Compact(users)
	needUsers := gc.Op != wire.GroupLeave && gc.Op != wire.GroupRename
	switch {
	case needUsers && len(users) == 0:
		return fail(wire.CodeInvalidArgument, "no users named")
	case !needUsers && len(users) > 0:
		return fail(wire.CodeInvalidArgument, "this change names no users")
	case needUsers && !admin:
		return fail(wire.CodeNotAdmin, "only admins add, remove, promote or demote")
	}
	if gc.Op == wire.GroupRemove || gc.Op == wire.GroupPromote || gc.Op == wire.GroupDemote {
		for _, u := range users {
			if !isMember(&cs.conv, u) {
				return fail(wire.CodeUnknownMember, u+" is not a member")
			}
		}
	}

	next := cs.conv
	next.Members = slices.Clone(cs.conv.Members)
	next.Admins = slices.Clone(cs.conv.Admins)
	ev := wire.GroupEvent{Op: gc.Op, Actor: env.User}
	var added, removed []string
	switch gc.Op {
	case wire.GroupAdd:
		for _, u := range users {
			if !isMember(&cs.conv, u) {
				added = append(added, u)
			}
		}
		if len(next.Members)+len(added) > p.cfg.MaxGroupSize {
			return fail(wire.CodeGroupFull, fmt.Sprintf("%d members plus %d is over the cap of %d", len(next.Members), len(added), p.cfg.MaxGroupSize))
		}
		next.Members = append(next.Members, added...)
		slices.Sort(next.Members)
		ev.Users = bytesOf(added)
	case wire.GroupRemove:
		if slices.Contains(users, user) {
			return fail(wire.CodeInvalidArgument, "to remove yourself, leave")
		}
		removed = users
		next.Members = without(next.Members, removed)
		next.Admins = without(next.Admins, removed)
		ev.Users = bytesOf(removed)
	case wire.GroupLeave:
		removed = []string{user}
		next.Members = without(next.Members, removed)
		next.Admins = without(next.Admins, removed)
		if len(next.Admins) == 0 && len(next.Members) > 0 {
			// A group always has an admin while it has members: the
			// first member (in id order) takes over.
			next.Admins = []string{next.Members[0]}
			ev.Users = [][]byte{[]byte(next.Members[0])}
		}
	case wire.GroupRename:
		if !validGroupName(gc.Name) {
			return fail(wire.CodeInvalidArgument, "name must be 1..128 bytes of UTF-8")
		}
		next.Name = string(gc.Name)
		ev.Name = gc.Name
	case wire.GroupPromote:
		var promoted []string
		for _, u := range users {
			if !slices.Contains(next.Admins, u) {
				promoted = append(promoted, u)
			}
		}
		next.Admins = append(next.Admins, promoted...)
		slices.Sort(next.Admins)
		ev.Users = bytesOf(promoted)
	case wire.GroupDemote:
		var demoted []string
		for _, u := range users {
			if slices.Contains(next.Admins, u) {
				demoted = append(demoted, u)
			}
		}
		next.Admins = without(next.Admins, demoted)
		if len(next.Admins) == 0 {
			return fail(wire.CodeInvalidArgument, "a group keeps at least one admin")
		}
		ev.Users = bytesOf(demoted)
	default:
		return fail(wire.CodeInvalidArgument, "unknown op")
	}
	if next.Name == cs.conv.Name && slices.Equal(next.Members, cs.conv.Members) && slices.Equal(next.Admins, cs.conv.Admins) {
		// Nothing changes (adding members who are members, renaming to
		// the same name...): answer, write nothing.
		p.queueFrame(env, EncodeConv(nil, gc.ReqID, &cs.conv, cs.lastSeq))
		return nil, nil
	}
	p.batch.GroupUpdates = append(p.batch.GroupUpdates, store.GroupUpdate{Conv: next, Added: added, Removed: removed})
	// Later records of this batch see the change; a failed commit drops
	// the cache (Invalidate) and the retry reloads it.
	cs.conv = next
	cs.lastSeq++
	a := p.systemMessage(next.ID, cs.lastSeq, env, opID, &ev)
	for _, u := range added {
		// A newcomer's unread count starts at the message announcing it:
		// the log before it is history, not unread.
		p.impliedRead(next.ID, u, cs.lastSeq-1)
	}
	p.queueFrame(env, EncodeConv(nil, gc.ReqID, &next, cs.lastSeq))
	return a, nil
}

// without returns sorted s without the (sorted) users in drop, in place.
func without(s, drop []string) []string {
	return slices.DeleteFunc(s, func(m string) bool {
		_, found := slices.BinarySearch(drop, m)
		return found
	})
}

func bytesOf(users []string) [][]byte {
	out := make([][]byte, len(users))
	for i, u := range users {
		out[i] = []byte(u)
	}
	return out
}

// reservedCMID reports whether a client_msg_id is one only the server
// writes.
func reservedCMID(cmid []byte) bool {
	return len(cmid) > 0 && cmid[0] == reservedCMIDPrefix[0]
}
