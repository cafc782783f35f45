// Package sdk is the Go client library for chatd.
//
// A Client is one user on one device. It keeps a WebSocket connection to
// the server (path /chat/v1/ws, the binary protocol of package wire),
// reconnects by itself, and turns the protocol into a simple contract:
//
//   - Send queues a message and returns its client_msg_id at once; the
//     Client writes it, and resends it with the same client_msg_id until the
//     server acknowledges it, so each message is stored exactly once.
//   - Events delivers every message of every conversation the user is in,
//     exactly once and in order per conversation, whether it arrived live or
//     was replayed after an outage, plus acknowledgements, receipts and
//     connection changes.
//   - MarkRead and MarkDelivered move the user's receipt pointers, batched.
//
// docs/protocol.md in the repository is the protocol specification.
//
// # Connection
//
// Start runs the connection loop: dial, HELLO (token from Config.Token,
// Config.DeviceID), WELCOME, then RESUME with the cursors (below), then every
// pending send in its original order. While connected the Client sends a
// PING every heartbeat interval announced in WELCOME, and drops the
// connection if the server sends nothing for two intervals. After any loss
// it reconnects with exponential backoff and full jitter: the n-th
// consecutive failed attempt waits a random time in
// [0, min(BackoffMax, BackoffMin*2^n)], the count restarting after each
// successful WELCOME; a GOAWAY's reconnect_after is a lower bound. A token
// refused with token_invalid or token_expired is replaced by calling
// Config.Token again; otherwise it is reused.
//
// # Ordering and deduplication
//
// Each conversation has a cursor: the highest seq such that every message
// up to it has been queued for the app. Seqs are assigned by the server, 1,
// 2, 3, ... without gaps, so the Client can tell what is missing:
//
//   - A MSG with seq <= cursor, or whose seq is already buffered, is a
//     duplicate and is dropped (Stats().Duplicates).
//   - A MSG with seq == cursor+1 is handed to the app, followed by any
//     buffered successors that are now contiguous.
//   - A MSG with seq > cursor+1 is buffered, and the gap is requested with
//     HISTORY, unless a RESUME answer is in flight (it will fill the gap).
//     Gaps are filled bottom-up, at most 200 messages per request
//     (before = min(lowest buffered seq, cursor+201), limit = before-cursor-1),
//     one request per conversation at a time, until the gap is closed. If
//     the server answers a gap request with nothing, the gap is skipped
//     (Stats().SkippedSeqs) rather than waited for forever.
//   - A message id seen before under another seq is dropped but holds its
//     seq (Stats().DuplicateIDs).
//   - The ACK of the Client's own message at seq N holds seq N, since that
//     message is part of the conversation, but it is reported as an Ack
//     event, not as a Message. The same holds when the server replays one of
//     the Client's pending messages before its ACK arrived: the replay
//     counts as the ACK. (Messages this device sent before the Client was
//     created, e.g. before a restart, do come back as Message events with
//     SenderDevice equal to Config.DeviceID.)
//   - A conversation new to this Client starts at its recent end, not at
//     seq 1: for a conversation RESUME did not list, the server replays its
//     newest 50 messages and the stream starts at the first of them; a
//     conversation first seen otherwise (a live MSG, an ACK, OpenDirect)
//     starts 50 messages below the first seq seen, and those 50 are fetched
//     with HISTORY. Older messages are for History (scrollback). The
//     conversations listed in RESUME are those with a starting point.
//   - When RESUMED says the replay was truncated by the server's cap, the
//     Client sends RESUME again with its updated cursors, until it is not.
//     Gap requests wait until then.
//
// Only once the app has received a message from Events does the cursor
// saved to the CursorStore (and reported by Cursors) move past it. After a
// restart, RESUME starts from the saved cursors, so nothing the app did not
// receive is lost; a message received just before a crash may come again if
// the store had not written it yet.
//
// # Receipts
//
// MarkRead(conv, seq) and MarkDelivered(conv, seq) record the highest value
// per conversation. At most one RECEIPT per conversation and kind is written
// per Config.ReceiptInterval, only when the value moved: the first at once,
// later ones at the end of the interval with the latest value. A read
// receipt also moves the delivered pointer on the server. Values not
// yet written, or written just before a connection dropped, are written on
// the next connection. By default every message the app receives is marked
// delivered (Config.DisableAutoDelivered turns that off). Receipt events
// report other members' pointers, and the user's own from other devices.
//
// # Events and backpressure
//
// The Events channel is buffered; beyond its capacity, events queue inside
// the Client without bound. The connection never waits for the app, so a
// slow app cannot cause heartbeat timeouts or slow-consumer disconnects, but
// it must keep reading Events (until the channel is closed by Close) or the
// backlog grows in memory: Stats().QueuedEvents shows it.
//
// Replies to the app's own requests are not events: SendWait, OpenDirect and
// History return them.
package sdk
