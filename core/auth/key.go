package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadOrCreateKey returns the Ed25519 private key stored at path as a PEM
// "PRIVATE KEY" block (PKCS#8), generating and storing a new one when the
// file does not exist. A new file is written with mode 0600 (and a missing
// parent directory created 0700) and appears atomically: it is written to
// a temporary file and hard-linked into place, so a concurrent caller
// either sees no file or a complete one, and two concurrent creators agree
// on one key (the loser reads the winner's). An existing file's mode is not
// checked, so keys mounted by an orchestrator (often 0644 or 0440) load;
// restricting access to it is the deployment's job.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	k, err := loadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("auth: key dir: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})

	tmp, err := os.CreateTemp(filepath.Dir(path), ".key-*.tmp") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("auth: create key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("auth: write key: %w", err)
	}
	err = os.Link(tmp.Name(), path)
	if errors.Is(err, fs.ErrExist) {
		return loadKey(path) // lost a creation race
	}
	if err != nil {
		// No hard links on this filesystem: exclusive create, which
		// still never clobbers a key but may expose a partial file to a
		// concurrent reader.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return loadKey(path)
		}
		if err != nil {
			return nil, fmt.Errorf("auth: create key: %w", err)
		}
		_, err = f.Write(data)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("auth: write key: %w", err)
		}
	}
	return priv, nil
}

func loadKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("auth: read key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("auth: %s: no PEM PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("auth: %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("auth: %s: key is %T, want ed25519", path, k)
	}
	return priv, nil
}

// LoadKey reads an existing key written by LoadOrCreateKey. Processes that
// only verify tokens (gateway-only roles) use it so they never create a key
// of their own that would disagree with the one that signs.
func LoadKey(path string) (ed25519.PrivateKey, error) { return loadKey(path) }
