package messages

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/store"
)

// Coarse last-seen answers, given where a user's privacy setting hides the
// exact time from someone who shares a conversation with it.
const (
	ApproxRecently    = "recently"     // online now, or seen within RecentlyWithin
	ApproxWithinWeek  = "within_week"  // seen within 7 days
	ApproxWithinMonth = "within_month" // seen within 30 days
	ApproxLongAgo     = "long_ago"     // longer, or never
)

// RecentlyWithin is how far back "recently" reaches. It covers "online
// now" too: a coarse answer never tells whether the user is online.
const RecentlyWithin = 3 * 24 * time.Hour

// PresenceView is what one viewer may see of one user's presence.
type PresenceView struct {
	// Hidden: nothing at all (the viewer is a stranger to a user who does
	// not show presence to everyone; said the same of unknown users).
	Hidden bool
	// Online and LastSeenMS are exact, or zero when Approx is set.
	Online     bool
	LastSeenMS int64
	// Approx is one of the Approx* values when only a coarse answer is
	// allowed, "" otherwise.
	Approx string
}

// ViewPresence applies st's owner's visibility setting vis for a viewer who
// is the owner (self) or shares a conversation with it (shares):
//
//	owner's setting   self    shares a conversation   stranger
//	everyone          exact   exact                   exact
//	contacts          exact   exact                   hidden
//	nobody            exact   coarse                  hidden
func ViewPresence(st routing.Status, vis store.Visibility, self, shares bool, now time.Time) PresenceView {
	switch {
	case self, vis == store.VisibilityEveryone, vis == store.VisibilityContacts && shares:
		return PresenceView{Online: st.Online, LastSeenMS: st.LastSeenMS}
	case vis == store.VisibilityNobody && shares:
		return PresenceView{Approx: approx(st, now)}
	}
	return PresenceView{Hidden: true}
}

func approx(st routing.Status, now time.Time) string {
	if st.Online {
		return ApproxRecently
	}
	if st.LastSeenMS == 0 {
		return ApproxLongAgo
	}
	ago := now.Sub(time.UnixMilli(st.LastSeenMS))
	switch {
	case ago <= RecentlyWithin:
		return ApproxRecently
	case ago <= 7*24*time.Hour:
		return ApproxWithinWeek
	case ago <= 30*24*time.Hour:
		return ApproxWithinMonth
	}
	return ApproxLongAgo
}

// SharesConversation reports whether users a and b are both members of
// some conversation: their direct conversation (one read), else a group
// (the two users' conversation lists, intersected). mine, when not nil, is
// a's conversation list, so that a caller checking many users lists a's
// once.
func SharesConversation(ctx context.Context, st store.Store, a, b string, mine []uint64) (bool, error) {
	if a == b {
		return true, nil
	}
	_, err := st.Conversation(ctx, DirectID(a, b))
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return false, fmt.Errorf("shares conversation: %w", err)
	}
	if mine == nil {
		if mine, err = st.UserConversations(ctx, a); err != nil {
			return false, fmt.Errorf("shares conversation: %w", err)
		}
	}
	if len(mine) == 0 {
		return false, nil
	}
	theirs, err := st.UserConversations(ctx, b)
	if err != nil {
		return false, fmt.Errorf("shares conversation: %w", err)
	}
	// Both ascending: merge.
	for i, j := 0, 0; i < len(mine) && j < len(theirs); {
		switch {
		case mine[i] == theirs[j]:
			return true, nil
		case mine[i] < theirs[j]:
			i++
		default:
			j++
		}
	}
	return false, nil
}
