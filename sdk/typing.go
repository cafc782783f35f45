package sdk

import (
	"time"

	"github.com/chatd-dev/chatd/wire"
)

// focusGap is the server's limit on FOCUS frames (gateway.FocusMinGap):
// one on a conversation per 250 ms per connection.
const focusGap = 250 * time.Millisecond

// Focus tells the server which conversation the app has on screen (0:
// none). Only that conversation's Typing events come to this device and,
// for a direct conversation, Presence events about the peer. The Client
// repeats it on every new connection. Switching faster than the server
// accepts (one conversation per 250 ms) is smoothed: the latest focus is
// sent when the gap has passed.
func (c *Client) Focus(conv uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || conv == c.focus {
		return
	}
	c.focus = conv
	c.sendFocusLocked()
}

// sendFocusLocked writes the current focus now, or arms a timer to write
// it once the server's gap has passed.
func (c *Client) sendFocusLocked() {
	if c.sess == nil {
		return
	}
	if c.focus != 0 {
		if wait := focusGap - c.now().Sub(c.focusAt); wait > 0 {
			if c.focusTimer == nil {
				c.focusTimer = time.AfterFunc(wait, func() {
					c.mu.Lock()
					defer c.mu.Unlock()
					c.focusTimer = nil
					if !c.closed {
						c.sendFocusLocked()
					}
				})
			}
			return
		}
		c.focusAt = c.now()
	}
	c.sess.send((&wire.Focus{ConvID: c.focus}).Append(nil, 0))
}

// SetTyping says whether the user is typing in conv. Call it on every
// keystroke: the Client sends a TYPING started at most every
// wire.TypingInterval while typing continues (the server refuses more than
// one a second, so a started within a second of the last one is dropped
// here) and a stopped when typing ends. Nothing is queued offline:
// typing is ephemeral.
func (c *Client) SetTyping(conv uint64, typing bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || conv == 0 || c.sess == nil {
		return
	}
	now := c.now()
	if typing {
		if c.typingConv == conv && now.Sub(c.typingAt) < wire.TypingInterval {
			return
		}
		// The gateway refuses a started within a second of the last one
		// (gateway.TypingMinGap), stopped or not in between: hold it; the
		// next keystroke sends it.
		if now.Sub(c.typingAt) < time.Second {
			return
		}
		c.typingConv, c.typingAt = conv, now
		c.sess.send((&wire.Typing{ConvID: conv, State: wire.TypingStarted}).Append(nil, 0))
		return
	}
	if c.typingConv != conv {
		return
	}
	c.typingConv = 0 // typingAt stays: the gap counts from the last started
	c.sess.send((&wire.Typing{ConvID: conv, State: wire.TypingStopped}).Append(nil, 0))
}
