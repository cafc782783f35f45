// Package auth mints and verifies the bearer tokens clients present to the
// gateway: JWTs signed with Ed25519 (alg "EdDSA"), short lived, naming a
// user and optionally one of the user's devices.
//
// Tokens carry sub (user id), dev (device id, optional), iat and exp, and a
// "kid" header naming the signing key, so that a Verifier can hold several
// public keys while keys rotate: sign with the new key, keep verifying with
// the old one until the longest TTL minted with it has passed, then drop it.
//
// Signer and Verifier are immutable after construction and safe for
// concurrent use.
package auth

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// MaxTokenLen bounds the token Verify accepts. Ours are ~250 bytes; the
	// bound keeps a client from making us base64-decode and JSON-parse
	// large inputs before the signature check rejects them.
	MaxTokenLen = 4096

	// Leeway is the clock skew tolerated between the minting and the
	// verifying machine: a token is accepted until exp+Leeway, and one
	// whose iat is up to Leeway in the future is accepted. 30s covers
	// NTP-disciplined hosts with room to spare while adding little to a
	// token's life.
	Leeway = 30 * time.Second

	// MaxIDLen is the maximum length of a user or device id.
	MaxIDLen = 64
)

// Errors returned by Verify. They are distinct: an ErrExpired token was
// authentic (signed by a known key, well formed) and the client should get a
// fresh one; ErrInvalid covers everything else (malformed, bad signature,
// unknown key, wrong algorithm, iat in the future, bad ids).
var (
	ErrExpired = errors.New("auth: token expired")
	ErrInvalid = errors.New("auth: invalid token")
)

// Claims is what a verified token says.
type Claims struct {
	User    string
	Device  string // "" when the token is not bound to a device
	Expires time.Time
}

// ValidUserID reports whether s can be a user id: 1..64 bytes of
// [A-Za-z0-9._@-]. The charset keeps ids safe as map keys, log fields,
// Kafka keys and path or URL components without escaping. Device ids follow
// the same rule.
func ValidUserID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

// KeyID returns the key id put in the "kid" header of tokens signed by the
// private key matching pub: the first 8 bytes of SHA-256(pub), base64url.
// Deriving it from the key means no id has to be configured or stored.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:8])
}

// tokenClaims is the JWT payload.
type tokenClaims struct {
	jwt.RegisteredClaims
	Dev string `json:"dev,omitempty"`
}

// Signer mints tokens with one private key.
type Signer struct {
	priv ed25519.PrivateKey
	kid  string
	now  func() time.Time
}

// NewSigner returns a Signer for priv.
func NewSigner(priv ed25519.PrivateKey) (*Signer, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("auth: private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	return &Signer{priv: priv, kid: KeyID(priv.Public().(ed25519.PublicKey)), now: time.Now}, nil
}

// Public returns the public key verifiers need.
func (s *Signer) Public() ed25519.PublicKey { return s.priv.Public().(ed25519.PublicKey) }

// KeyID returns the kid of the tokens s mints.
func (s *Signer) KeyID() string { return s.kid }

// Mint returns a token for user (and device, when not empty) valid for ttl
// from now. user and device must satisfy ValidUserID; ttl must be positive.
func (s *Signer) Mint(user, device string, ttl time.Duration) (string, error) {
	return s.MintAt(user, device, s.now(), ttl)
}

// MintAt is Mint with an explicit issue time (tests mint expired tokens
// with it; operators pre-date nothing).
func (s *Signer) MintAt(user, device string, now time.Time, ttl time.Duration) (string, error) {
	if !ValidUserID(user) {
		return "", fmt.Errorf("auth: invalid user id %q", user)
	}
	if device != "" && !ValidUserID(device) {
		return "", fmt.Errorf("auth: invalid device id %q", device)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("auth: non-positive ttl %v", ttl)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Dev: device,
	})
	tok.Header["kid"] = s.kid
	return tok.SignedString(s.priv)
}

// Verifier checks tokens against a set of public keys.
type Verifier struct {
	keys map[string]ed25519.PublicKey // by KeyID
}

// NewVerifier returns a Verifier accepting tokens signed by any of keys.
func NewVerifier(keys ...ed25519.PublicKey) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("auth: no verification keys")
	}
	v := &Verifier{keys: make(map[string]ed25519.PublicKey, len(keys))}
	for _, k := range keys {
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("auth: public key is %d bytes, want %d", len(k), ed25519.PublicKeySize)
		}
		v.keys[KeyID(k)] = k
	}
	return v, nil
}

var validMethods = []string{jwt.SigningMethodEdDSA.Alg()}

// keyFunc picks the public key named by the token's kid. The algorithm was
// already pinned to EdDSA by the parser (jwt.WithValidMethods), so an
// attacker cannot make us verify an HMAC with the public key as secret or
// accept alg "none".
func (v *Verifier) keyFunc(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	k, ok := v.keys[kid]
	if !ok {
		return nil, errors.New("unknown kid")
	}
	return k, nil
}

// Verify checks token at time now and returns its claims. Errors wrap
// ErrExpired or ErrInvalid (test with errors.Is); no other error is
// returned. A token past exp+Leeway is expired only if it is otherwise valid:
// the signature is checked before any claim. Tokens longer than MaxTokenLen
// are rejected before any parsing.
func (v *Verifier) Verify(token []byte, now time.Time) (Claims, error) {
	if len(token) == 0 || len(token) > MaxTokenLen {
		return Claims{}, fmt.Errorf("%w: length %d", ErrInvalid, len(token))
	}
	var tc tokenClaims
	p := jwt.NewParser(
		jwt.WithValidMethods(validMethods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithStrictDecoding(), // one encoding per token: no malleable signatures
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	if _, err := p.ParseWithClaims(string(token), &tc, v.keyFunc); err != nil {
		// The validator joins all failed claims; iat (or nbf) in the
		// future makes the token invalid even if it is also expired.
		if errors.Is(err, jwt.ErrTokenExpired) &&
			!errors.Is(err, jwt.ErrTokenUsedBeforeIssued) &&
			!errors.Is(err, jwt.ErrTokenNotValidYet) {
			return Claims{}, fmt.Errorf("%w: %v", ErrExpired, err)
		}
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if tc.IssuedAt == nil {
		return Claims{}, fmt.Errorf("%w: missing iat", ErrInvalid)
	}
	if !ValidUserID(tc.Subject) {
		return Claims{}, fmt.Errorf("%w: bad sub", ErrInvalid)
	}
	if tc.Dev != "" && !ValidUserID(tc.Dev) {
		return Claims{}, fmt.Errorf("%w: bad dev", ErrInvalid)
	}
	return Claims{User: tc.Subject, Device: tc.Dev, Expires: tc.ExpiresAt.Time}, nil
}
