package messages

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// InboxEntry is one conversation of a user's inbox.
type InboxEntry struct {
	Conv store.Conversation
	// LastSeq is the conversation's latest seq; ReadSeq how far the user
	// has seen it: the higher of its read pointer and the position its own
	// writes imply (store.Pointers.Seen).
	LastSeq uint64
	ReadSeq uint64
	// Unread is LastSeq - ReadSeq: the messages after the user's read
	// pointer. Computed from the two pointers, never from a counter kept
	// per member on every message. The user's own messages are not
	// counted: a send moves the sender's Seen pointer to it (impliedRead),
	// and a newcomer's starts just before the message that added it.
	Unread uint64
	// Last is the latest message (nil: none yet).
	Last *store.Message
	// ActivityMS orders the inbox: Last's server time, or the
	// conversation's creation time when it has no message.
	ActivityMS uint64
}

// Inbox returns every conversation user is a member of, most recent
// activity first (ties: the higher conversation id first). It reads three
// rows per conversation (the conversation, its latest message, the user's
// pointers) and nothing per message, so its cost grows with the number of
// conversations, not with their traffic.
//
// Groups' read pointers reach the store up to a write-behind window late
// (behind.go); rc (may be nil) has every advance at once, so for groups
// the read position is the higher of the two, read for all groups in one
// call. If rc fails, the store's pointers stand: the counters are a
// best-effort cache, and an unread count a few seconds high is better
// than no inbox.
func Inbox(ctx context.Context, st store.Store, rc routing.ReceiptCounter, user string) ([]InboxEntry, error) {
	ids, err := st.UserConversations(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("inbox: %w", err)
	}
	out := make([]InboxEntry, 0, len(ids))
	for _, id := range ids {
		e := InboxEntry{}
		if e.Conv, err = st.Conversation(ctx, id); err != nil {
			return nil, fmt.Errorf("inbox: conversation %d: %w", id, err)
		}
		last, _, err := st.MessagesBefore(ctx, id, 0, 1)
		if err != nil {
			return nil, fmt.Errorf("inbox: latest of %d: %w", id, err)
		}
		ptr, err := st.Pointers(ctx, id, user)
		if err != nil {
			return nil, fmt.Errorf("inbox: pointers of %d: %w", id, err)
		}
		e.ReadSeq, e.ActivityMS = max(ptr.Read, ptr.Seen), e.Conv.CreatedMS
		if len(last) == 1 {
			e.Last = &last[0]
			e.LastSeq, e.ActivityMS = e.Last.Seq, e.Last.ServerTimeMS
		}
		if e.LastSeq > e.ReadSeq {
			e.Unread = e.LastSeq - e.ReadSeq
		}
		out = append(out, e)
	}
	if rc != nil {
		var groups []uint64
		for i := range out {
			if out[i].Conv.Kind == wire.ConvGroup {
				groups = append(groups, out[i].Conv.ID)
			}
		}
		if ptrs, err := rc.ReceiptPointers(ctx, user, routing.ReceiptRead, groups, nil); err == nil && len(groups) > 0 {
			j := 0
			for i := range out {
				e := &out[i]
				if e.Conv.Kind != wire.ConvGroup {
					continue
				}
				e.ReadSeq = max(e.ReadSeq, min(ptrs[j], e.LastSeq))
				j++
				e.Unread = 0
				if e.LastSeq > e.ReadSeq {
					e.Unread = e.LastSeq - e.ReadSeq
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b InboxEntry) int {
		if c := cmp.Compare(b.ActivityMS, a.ActivityMS); c != 0 {
			return c
		}
		return cmp.Compare(b.Conv.ID, a.Conv.ID)
	})
	return out, nil
}

// InboxAfter reports whether e comes after the position (activityMS, conv)
// in inbox order: the page cursor of the inbox API.
func InboxAfter(e *InboxEntry, activityMS, conv uint64) bool {
	if e.ActivityMS != activityMS {
		return e.ActivityMS < activityMS
	}
	return e.Conv.ID < conv
}
