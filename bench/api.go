package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// DevToken mints a token through chatd's dev endpoint.
func DevToken(ctx context.Context, api, user, device string) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	err := postJSON(ctx, api+"/dev/token", "", map[string]string{"user": user, "device": device}, &out)
	return out.Token, err
}

// OpenDirect opens the direct conversation of the token's user and peer.
func OpenDirect(ctx context.Context, api, token, peer string) (uint64, error) {
	var out struct {
		ConvID string `json:"conversation_id"`
	}
	if err := postJSON(ctx, api+"/api/v1/conversations/direct", token, map[string]string{"peer": peer}, &out); err != nil {
		return 0, err
	}
	return strconv.ParseUint(out.ConvID, 10, 64)
}

func postJSON(ctx context.Context, url, token string, in, out any) error {
	b, _ := json.Marshal(in)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e bytes.Buffer
		_, _ = e.ReadFrom(resp.Body)
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(e.Bytes()))
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
