package auth

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func setup(t testing.TB) (*Signer, *Verifier) {
	t.Helper()
	s, err := NewSigner(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func mustMint(t testing.TB, s *Signer, user, dev string, ttl time.Duration) string {
	t.Helper()
	tok, err := s.Mint(user, dev, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestRoundTrip(t *testing.T) {
	s, v := setup(t)
	before := time.Now()
	for _, dev := range []string{"", "phone-1"} {
		tok := mustMint(t, s, "alice@example.com", dev, time.Hour)
		c, err := v.Verify([]byte(tok), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if c.User != "alice@example.com" || c.Device != dev {
			t.Fatalf("claims = %+v", c)
		}
		// exp has second precision (NumericDate).
		if d := c.Expires.Sub(before.Add(time.Hour)); d < -time.Second || d > 2*time.Second {
			t.Fatalf("Expires = %v, want ~%v", c.Expires, before.Add(time.Hour))
		}
	}
	if len(mustMint(t, s, "u", "", time.Minute)) > 400 {
		t.Fatal("tokens grew unexpectedly")
	}
}

func TestHeaderHasKid(t *testing.T) {
	s, _ := setup(t)
	tok := mustMint(t, s, "bob", "", time.Hour)
	hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	var h map[string]any
	if err := json.Unmarshal(hdr, &h); err != nil {
		t.Fatal(err)
	}
	if h["alg"] != "EdDSA" || h["kid"] != s.KeyID() || s.KeyID() != KeyID(s.Public()) {
		t.Fatalf("header = %v, kid %q", h, s.KeyID())
	}
}

func TestExpired(t *testing.T) {
	s, v := setup(t)
	tok := []byte(mustMint(t, s, "bob", "d", time.Minute))
	now := time.Now()
	// Within the leeway after exp: still accepted.
	if _, err := v.Verify(tok, now.Add(time.Minute+Leeway-2*time.Second)); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	_, err := v.Verify(tok, now.Add(time.Minute+Leeway+2*time.Second))
	if !errors.Is(err, ErrExpired) || errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrExpired only", err)
	}
}

func TestExpiredButForgedIsInvalid(t *testing.T) {
	s, _ := setup(t)
	_, other := setup(t)
	tok := []byte(mustMint(t, s, "bob", "", time.Minute))
	_, err := other.Verify(tok, time.Now().Add(time.Hour))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid (signature before claims)", err)
	}
}

func TestIssuedInFuture(t *testing.T) {
	s, v := setup(t)
	now := time.Now()
	s.now = func() time.Time { return now.Add(time.Minute) }
	tok := []byte(mustMint(t, s, "bob", "", time.Hour))
	if _, err := v.Verify(tok, now); !errors.Is(err, ErrInvalid) {
		t.Fatalf("iat 60s ahead: err = %v, want ErrInvalid", err)
	}
	s.now = func() time.Time { return now.Add(Leeway - 2*time.Second) }
	tok = []byte(mustMint(t, s, "bob", "", time.Hour))
	if _, err := v.Verify(tok, now); err != nil {
		t.Fatalf("iat within leeway: %v", err)
	}
	// Future iat and expired at once is invalid, not expired.
	s.now = func() time.Time { return now.Add(time.Hour) }
	tok = []byte(mustMint(t, s, "bob", "", time.Second))
	if _, err := v.Verify(tok, now.Add(-time.Hour)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
}

func TestWrongKeyAndRotation(t *testing.T) {
	oldS, _ := setup(t)
	newS, _ := setup(t)
	strangerS, _ := setup(t)
	v, err := NewVerifier(newS.Public(), oldS.Public())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Signer{oldS, newS} {
		if _, err := v.Verify([]byte(mustMint(t, s, "u", "", time.Hour)), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	tok := mustMint(t, strangerS, "u", "", time.Hour)
	if _, err := v.Verify([]byte(tok), time.Now()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown key: err = %v", err)
	}
	// A known kid on a signature by another key.
	parts := strings.Split(tok, ".")
	hdr := b64(`{"alg":"EdDSA","kid":"` + newS.KeyID() + `","typ":"JWT"}`)
	forged := hdr + "." + parts[1] + "." + b64(string(ed25519.Sign(strangerS.priv, []byte(hdr+"."+parts[1]))))
	if _, err := v.Verify([]byte(forged), time.Now()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("wrong key with known kid: err = %v", err)
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestTampered(t *testing.T) {
	s, v := setup(t)
	tok := mustMint(t, s, "alice", "", time.Hour)
	parts := strings.Split(tok, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	evil := strings.Replace(string(payload), `"alice"`, `"admin"`, 1)
	if evil == string(payload) {
		t.Fatal("payload did not contain the user")
	}
	tampered := parts[0] + "." + b64(evil) + "." + parts[2]
	if _, err := v.Verify([]byte(tampered), time.Now()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("tampered payload: err = %v", err)
	}
	// Flip every character of the signature in turn: strict decoding
	// rejects non-canonical last characters, so none may pass.
	for i := range parts[2] {
		sig := []byte(parts[2])
		if sig[i] == 'A' {
			sig[i] = 'B'
		} else {
			sig[i] = 'A'
		}
		bad := parts[0] + "." + parts[1] + "." + string(sig)
		if _, err := v.Verify([]byte(bad), time.Now()); !errors.Is(err, ErrInvalid) {
			t.Fatalf("signature char %d changed: err = %v", i, err)
		}
	}
}

func TestAlgConfusion(t *testing.T) {
	s, v := setup(t)
	now := time.Now()
	payload := b64(`{"sub":"alice","iat":` + itoa(now.Unix()) + `,"exp":` + itoa(now.Add(time.Hour).Unix()) + `}`)
	kid := s.KeyID()

	none := b64(`{"alg":"none","kid":"`+kid+`"}`) + "." + payload + "."
	if _, err := v.Verify([]byte(none), now); !errors.Is(err, ErrInvalid) {
		t.Fatalf("alg none: err = %v", err)
	}
	// HS256 keyed with the public key: the classic confusion attack.
	hs := b64(`{"alg":"HS256","kid":"`+kid+`"}`) + "." + payload
	m := hmac.New(sha256.New, s.Public())
	m.Write([]byte(hs))
	hs += "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	if _, err := v.Verify([]byte(hs), now); !errors.Is(err, ErrInvalid) {
		t.Fatalf("HS256: err = %v", err)
	}
	// A proper EdDSA signature over this payload passes (the payload
	// itself is fine).
	ed := b64(`{"alg":"EdDSA","kid":"`+kid+`"}`) + "." + payload
	ed += "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(s.priv, []byte(ed)))
	if _, err := v.Verify([]byte(ed), now); err != nil {
		t.Fatalf("hand-made EdDSA token: %v", err)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestMalformed(t *testing.T) {
	s, v := setup(t)
	now := time.Now()
	good := mustMint(t, s, "alice", "", time.Hour)
	sign := func(payload string) string {
		h := b64(`{"alg":"EdDSA","kid":"`+s.KeyID()+`"}`) + "." + b64(payload)
		return h + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(s.priv, []byte(h)))
	}
	iat, exp := itoa(now.Unix()), itoa(now.Add(time.Hour).Unix())
	cases := map[string]string{
		"empty":          "",
		"garbage":        "not a token",
		"dots":           "..",
		"two parts":      strings.Join(strings.Split(good, ".")[:2], "."),
		"four parts":     good + ".x",
		"bad base64":     "!!!." + good,
		"oversized":      good + strings.Repeat("A", MaxTokenLen),
		"no kid":         strings.Replace(good, strings.Split(good, ".")[0], b64(`{"alg":"EdDSA"}`), 1),
		"no exp":         sign(`{"sub":"alice","iat":` + iat + `}`),
		"no iat":         sign(`{"sub":"alice","exp":` + exp + `}`),
		"no sub":         sign(`{"iat":` + iat + `,"exp":` + exp + `}`),
		"bad sub":        sign(`{"sub":"al ice","iat":` + iat + `,"exp":` + exp + `}`),
		"long sub":       sign(`{"sub":"` + strings.Repeat("a", 65) + `","iat":` + iat + `,"exp":` + exp + `}`),
		"bad dev":        sign(`{"sub":"alice","dev":"a/b","iat":` + iat + `,"exp":` + exp + `}`),
		"sub not string": sign(`{"sub":5,"iat":` + iat + `,"exp":` + exp + `}`),
		"payload json":   sign(`[1,2]`),
	}
	for name, tok := range cases {
		if _, err := v.Verify([]byte(tok), now); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := v.Verify([]byte(sign(`{"sub":"alice","iat":`+iat+`,"exp":`+exp+`}`)), now); err != nil {
		t.Fatalf("control case: %v", err)
	}
}

func TestValidUserID(t *testing.T) {
	good := []string{"a", "Alice", "bob.smith", "x_y-z", "u@example.com", "0123456789", strings.Repeat("a", 64)}
	bad := []string{"", strings.Repeat("a", 65), "a b", "a/b", "é", "a\x00", "a:b", "a+b", "<script>", "a\n"}
	for _, s := range good {
		if !ValidUserID(s) {
			t.Errorf("ValidUserID(%q) = false", s)
		}
	}
	s, _ := setup(t)
	for _, u := range bad {
		if ValidUserID(u) {
			t.Errorf("ValidUserID(%q) = true", u)
		}
		if _, err := s.Mint(u, "", time.Hour); err == nil {
			t.Errorf("Mint(%q) accepted", u)
		}
		if u != "" {
			if _, err := s.Mint("ok", u, time.Hour); err == nil {
				t.Errorf("Mint device %q accepted", u)
			}
		}
	}
	if _, err := s.Mint("ok", "", 0); err == nil {
		t.Error("zero ttl accepted")
	}
}

func TestKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	path := filepath.Join(dir, "signing.pem")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "-----BEGIN PRIVATE KEY-----\n") {
		t.Fatalf("not a PKCS#8 PEM file: %q", data)
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Fatal("reload returned a different key")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}

	// Concurrent first use agrees on one key.
	path2 := filepath.Join(dir, "race.pem")
	keys := make([]ed25519.PrivateKey, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadOrCreateKey(path2)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !k.Equal(keys[0]) {
			t.Fatal("concurrent creators got different keys")
		}
	}

	// Garbage and wrong key types are errors, not silently replaced.
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("hello"), 0o600)
	if _, err := LoadOrCreateKey(bad); err == nil {
		t.Fatal("garbage key file accepted")
	}
	if data, _ := os.ReadFile(bad); string(data) != "hello" {
		t.Fatal("garbage key file overwritten")
	}
}

func BenchmarkVerify(b *testing.B) {
	s, v := setup(b)
	tok := []byte(mustMint(b, s, "alice@example.com", "phone-1", time.Hour))
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMint(b *testing.B) {
	s, _ := setup(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Mint("alice@example.com", "phone-1", time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}
