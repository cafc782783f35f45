package sdk

import (
	"time"

	"github.com/chatd-dev/chatd/wire"
)

// Focus tells the server which conversation the app has on screen (0:
// none). Only that conversation's Typing events come to this device. The
// Client repeats it on every new connection.
func (c *Client) Focus(conv uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || conv == c.focus {
		return
	}
	c.focus = conv
	if c.sess != nil {
		c.sess.send((&wire.Focus{ConvID: conv}).Append(nil, 0))
	}
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
