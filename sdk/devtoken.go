package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// DevToken asks a chatd server running in dev mode for a token for user on
// device: POST {apiBaseURL}/dev/token with {"user":..., "device":...}.
// Production servers do not offer this endpoint; it exists for local
// development, demos and tests.
//
//	cfg.Token = func(ctx context.Context) (string, error) {
//		return sdk.DevToken(ctx, "http://127.0.0.1:8081", "alice", "laptop")
//	}
func DevToken(ctx context.Context, apiBaseURL, user, device string) (string, error) {
	body, _ := json.Marshal(map[string]string{"user": user, "device": device})
	u := strings.TrimRight(apiBaseURL, "/") + "/dev/token"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("sdk: POST %s: %s: %s", u, resp.Status, bytes.TrimSpace(b))
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", fmt.Errorf("sdk: POST %s: bad response: %w", u, err)
	}
	if out.Token == "" {
		return "", fmt.Errorf("sdk: POST %s: response has no token", u)
	}
	return out.Token, nil
}
