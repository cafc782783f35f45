package node

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatd-dev/chatd/core/store"
)

// instrumented wraps a Store with a latency histogram per operation.
type instrumented struct {
	s   store.Store
	lat *prometheus.HistogramVec
}

var _ store.Store = (*instrumented)(nil)

func instrument(s store.Store, reg prometheus.Registerer) store.Store {
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "chatd_store_op_seconds",
		Help:    "Message store latency by operation.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
	}, []string{"op"})
	reg.MustRegister(lat)
	return &instrumented{s: s, lat: lat}
}

func (i *instrumented) observe(op string, start time.Time) {
	i.lat.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (i *instrumented) EnsureConversation(ctx context.Context, c store.Conversation) (store.Conversation, error) {
	defer i.observe("ensure_conversation", time.Now())
	return i.s.EnsureConversation(ctx, c)
}

func (i *instrumented) Conversation(ctx context.Context, id uint64) (store.Conversation, error) {
	defer i.observe("conversation", time.Now())
	return i.s.Conversation(ctx, id)
}

func (i *instrumented) UserConversations(ctx context.Context, user string) ([]uint64, error) {
	defer i.observe("user_conversations", time.Now())
	return i.s.UserConversations(ctx, user)
}

func (i *instrumented) LastSeq(ctx context.Context, conv uint64) (uint64, error) {
	defer i.observe("last_seq", time.Now())
	return i.s.LastSeq(ctx, conv)
}

func (i *instrumented) Commit(ctx context.Context, b *store.Batch) error {
	defer i.observe("commit", time.Now())
	return i.s.Commit(ctx, b)
}

func (i *instrumented) LookupClientMsg(ctx context.Context, conv uint64, sender, cmid string) (store.Message, bool, error) {
	defer i.observe("lookup_client_msg", time.Now())
	return i.s.LookupClientMsg(ctx, conv, sender, cmid)
}

func (i *instrumented) LookupClientMsgs(ctx context.Context, keys []store.ClientMsgKey) ([]store.ClientMsgResult, error) {
	defer i.observe("lookup_client_msgs", time.Now())
	return i.s.LookupClientMsgs(ctx, keys)
}

func (i *instrumented) MessagesAfter(ctx context.Context, conv, after uint64, limit int) ([]store.Message, error) {
	defer i.observe("messages_after", time.Now())
	return i.s.MessagesAfter(ctx, conv, after, limit)
}

func (i *instrumented) MessagesBefore(ctx context.Context, conv, before uint64, limit int) ([]store.Message, bool, error) {
	defer i.observe("messages_before", time.Now())
	return i.s.MessagesBefore(ctx, conv, before, limit)
}

func (i *instrumented) Pointers(ctx context.Context, conv uint64, user string) (store.Pointers, error) {
	defer i.observe("pointers", time.Now())
	return i.s.Pointers(ctx, conv, user)
}

func (i *instrumented) UserSettings(ctx context.Context, user string) (store.Settings, error) {
	defer i.observe("user_settings", time.Now())
	return i.s.UserSettings(ctx, user)
}

func (i *instrumented) SetUserSettings(ctx context.Context, user string, st store.Settings) error {
	defer i.observe("set_user_settings", time.Now())
	return i.s.SetUserSettings(ctx, user, st)
}

func (i *instrumented) Close() error { return i.s.Close() }

// pebbleLogger routes Pebble's log lines to slog: its chatty info lines at
// debug level.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
	os.Exit(1)
}
