// Command chat is a terminal client for chatd, built on package sdk.
//
//	chat --user alice [--peer bob]
//	chat --api http://127.0.0.1:8081 --ws ws://127.0.0.1:8080/chat/v1/ws \
//	     --user alice --device laptop --peer bob --state ~/.chatd-cli/alice-laptop
//
// Without --token it asks the server's dev endpoint (POST /dev/token on
// --api) for one. Cursors are kept in --state, so a restarted client shows
// only what it missed.
//
// Without --peer it starts by showing the inbox: your conversations, latest
// first, with unread counts and last messages.
//
// Type a line to send it to the current conversation; /open <user>,
// /inbox, /go <n>, /group <name> <user>..., /add, /remove, /promote,
// /demote, /rename, /leave, /history [n], /who, /help and /quit are
// commands. Your messages show a status as it changes: "✓ sent" when the
// server stored them; in direct conversations "✓✓ delivered" and "✓✓ read"
// when the peer's pointers pass them.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/chatd-dev/chatd/sdk"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	var (
		api    = flag.String("api", "http://127.0.0.1:8081", "base URL of the HTTP API (dev token, inbox)")
		wsURL  = flag.String("ws", "ws://127.0.0.1:8080/chat/v1/ws", "WebSocket URL")
		user   = flag.String("user", "", "user id (required)")
		device = flag.String("device", defaultDevice(), "device id")
		peer   = flag.String("peer", "", "open the direct conversation with this user at start")
		token  = flag.String("token", "", "token to use instead of asking --api for a dev token")
		state  = flag.String("state", "", "directory for cursors (default ~/.chatd-cli/<user>-<device>)")
		debug  = flag.Bool("debug", false, "log SDK diagnostics to stderr")
	)
	flag.Parse()
	if *user == "" || flag.NArg() > 0 {
		flag.Usage()
		return fmt.Errorf("--user is required")
	}
	dir := *state
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return err
		}
		dir = filepath.Join(home, ".chatd-cli", *user+"-"+*device)
	}
	logger := slog.New(slog.DiscardHandler)
	if *debug {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	tokenFn := func(ctx context.Context) (string, error) {
		if *token != "" {
			return *token, nil
		}
		return sdk.DevToken(ctx, *api, *user, *device)
	}

	c, err := sdk.New(sdk.Config{
		URL:      *wsURL,
		APIURL:   *api,
		Token:    tokenFn,
		DeviceID: *device,
		Cursors:  sdk.FileCursorStore(filepath.Join(dir, "cursors.json")),
		Logger:   logger,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := c.Start(ctx); err != nil {
		return err
	}
	runErr := run(ctx, c, os.Stdin, os.Stdout, uiOptions{User: *user, Peer: *peer, Inbox: *peer == ""})
	if err := c.Close(); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// defaultDevice derives a device id from the host name, so that two
// machines of the same user are two devices.
func defaultDevice() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "cli"
	}
	h = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, h)
	return "cli-" + h[:min(len(h), 56)]
}
