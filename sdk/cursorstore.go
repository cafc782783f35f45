package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// CursorStore persists the per-conversation cursors: for each conversation,
// the highest seq up to which every message has been handed to the app.
//
// The Client calls Load once, in New, and Save from a single goroutine each
// time a cursor moves (once per message received by the app), always with a
// larger seq than before for that conversation. Save should be cheap:
// debounce writes as FileStore does. If the store also has a
// Flush() error method, Close calls it.
type CursorStore interface {
	Load() (map[uint64]uint64, error)
	Save(conv, seq uint64) error
}

// FileStore is a CursorStore that keeps the cursors in a JSON file. Writes
// are debounced (at most one per FlushDelay) and atomic: the file is written
// under a temporary name, synced, and renamed over the old one, so a crash
// leaves either the old or the new content. Writing happens outside the
// lock Save takes, so a slow disk never blocks Save. Create it with
// FileCursorStore.
type FileStore struct {
	path string
	// FlushDelay is how long Save waits before writing, to batch bursts.
	// Default 500ms. Set it before first use.
	FlushDelay time.Duration

	wmu sync.Mutex // serializes file writes

	mu     sync.Mutex // guards the fields below
	cur    map[uint64]uint64
	loaded bool
	dirty  bool
	timer  *time.Timer
	err    error // last background write error, reported by the next Save or Flush
}

// FileCursorStore returns a FileStore backed by the file at path. The file
// and its directory are created on the first write; a missing file loads as
// no cursors.
func FileCursorStore(path string) *FileStore {
	return &FileStore{path: path, FlushDelay: 500 * time.Millisecond, cur: map[uint64]uint64{}}
}

type cursorFile struct {
	Version int               `json:"version"`
	Cursors map[string]uint64 `json:"cursors"`
}

// Load reads the file.
func (f *FileStore) Load() (map[uint64]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadLocked()
}

func (f *FileStore) loadLocked() (map[uint64]uint64, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		f.loaded = true
		return map[uint64]uint64{}, nil
	}
	if err != nil {
		return nil, err
	}
	var cf cursorFile
	if err := json.Unmarshal(b, &cf); err != nil {
		return nil, fmt.Errorf("sdk: cursor file %s: %w", f.path, err)
	}
	out := make(map[uint64]uint64, len(cf.Cursors))
	for k, v := range cf.Cursors {
		conv, err := strconv.ParseUint(k, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("sdk: cursor file %s: bad conversation id %q", f.path, k)
		}
		out[conv] = v
		if v > f.cur[conv] {
			f.cur[conv] = v
		}
	}
	f.loaded = true
	return out, nil
}

// Save records a cursor and schedules a write. It returns the error of the
// previous background write, if it failed.
func (f *FileStore) Save(conv, seq uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded {
		// Never overwrite a file we have not read: merge it in first.
		if _, err := f.loadLocked(); err != nil {
			return err
		}
	}
	f.cur[conv] = seq
	f.dirty = true
	if f.timer == nil {
		f.timer = time.AfterFunc(f.FlushDelay, func() {
			f.mu.Lock()
			f.timer = nil
			f.mu.Unlock()
			if err := f.write(); err != nil {
				f.mu.Lock()
				f.err = err
				f.mu.Unlock()
			}
		})
	}
	err := f.err
	f.err = nil
	return err
}

// Flush writes pending changes now.
func (f *FileStore) Flush() error {
	f.mu.Lock()
	if f.timer != nil {
		f.timer.Stop()
		f.timer = nil
	}
	prev := f.err
	f.err = nil
	f.mu.Unlock()
	if err := f.write(); err != nil {
		return err
	}
	return prev
}

// write writes a snapshot of the cursors if they changed since the last
// successful write.
func (f *FileStore) write() error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mu.Lock()
	if !f.dirty {
		f.mu.Unlock()
		return nil
	}
	cf := cursorFile{Version: 1, Cursors: make(map[string]uint64, len(f.cur))}
	for k, v := range f.cur {
		cf.Cursors[strconv.FormatUint(k, 10)] = v
	}
	f.dirty = false
	f.mu.Unlock()

	b, err := json.MarshalIndent(cf, "", "  ")
	if err == nil {
		err = writeFileAtomic(f.path, append(b, '\n'))
	}
	if err != nil {
		f.mu.Lock()
		f.dirty = true // try again with the next Save or Flush
		f.mu.Unlock()
	}
	return err
}

func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// Make the rename itself durable (best effort: not every platform can
	// sync a directory).
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
