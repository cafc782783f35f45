// Package snowflake issues 64-bit ids that sort by creation time.
//
// Layout, most significant bit first:
//
//	1 bit  always zero, so ids fit an int64 (SQL BIGINT, JSON-safe signed ints)
//	41 bits milliseconds since Epoch (2024-01-01T00:00:00Z): good until 2093
//	10 bits node id (0..1023), unique per concurrently running generator
//	12 bits sequence within the millisecond (4096 ids per ms per node)
//
// A Generator never issues the same id twice and its ids strictly increase,
// whatever the wall clock does. The price is that its ids may run ahead of
// the wall clock: when the clock steps backwards the generator keeps issuing
// from the last millisecond it used, and when 4096 ids are taken within one
// millisecond it moves on to the next millisecond instead of sleeping. Time
// of such an id is therefore slightly later than the moment it was issued;
// callers must treat Time as an approximation, not a measurement.
//
// Uniqueness across processes relies on distinct node ids among the
// generators running at the same time, and across restarts of one node on
// either the clock having moved past the last id or WithFloor.
package snowflake

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Bit layout.
const (
	SeqBits  = 12
	NodeBits = 10
	TimeBits = 41

	MaxNode = 1<<NodeBits - 1 // 1023
	MaxSeq  = 1<<SeqBits - 1  // 4095

	nodeShift = SeqBits
	timeShift = SeqBits + NodeBits
	maxMS     = 1<<TimeBits - 1
)

// Epoch is the zero of the id clock.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

var epochMS = Epoch.UnixMilli()

// Generator issues ids for one node. It is safe for concurrent use; the zero
// value is not usable, call New.
type Generator struct {
	// last is the last id issued (or the floor). Next advances it with a
	// compare-and-swap, so Next takes no lock and allocates nothing.
	last atomic.Uint64
	node uint64 // node << nodeShift, precomputed
	now  func() time.Time
}

// Option configures New.
type Option func(*options)

type options struct {
	floor    uint64
	hasFloor bool
	now      func() time.Time
}

// WithFloor makes every id the generator issues greater than floor. A
// restarted process passes the highest id it persisted (from any node), so
// that it cannot reissue ids if the clock was stepped back while it was
// down. The floor must be a valid id (top bit clear).
func WithFloor(floor uint64) Option {
	return func(o *options) { o.floor, o.hasFloor = floor, true }
}

// WithClock replaces time.Now as the generator's clock. Meant for tests; the
// function must be safe for concurrent use.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// ErrNode is returned by New for a node id above MaxNode.
var ErrNode = errors.New("snowflake: node id out of range")

// New returns a generator for node (0..MaxNode).
func New(node uint16, opts ...Option) (*Generator, error) {
	if node > MaxNode {
		return nil, fmt.Errorf("%w: %d > %d", ErrNode, node, MaxNode)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	g := &Generator{node: uint64(node) << nodeShift, now: o.now}
	if g.now == nil {
		g.now = time.Now
	}
	if o.hasFloor {
		if o.floor>>63 != 0 {
			return nil, fmt.Errorf("snowflake: floor %#x has the top bit set", o.floor)
		}
		// Our ids in the floor's millisecond compare above the floor only
		// when (node, seq) does; start from the floor's (ms, our node, its
		// seq) when that is >= floor, else from the end of its millisecond
		// so the next id moves to the following one. Either way the first
		// id issued is > floor.
		ms := o.floor >> timeShift
		start := ms<<timeShift | g.node | o.floor&MaxSeq
		if start < o.floor {
			start = ms<<timeShift | g.node | MaxSeq
		}
		g.last.Store(start)
	}
	return g, nil
}

// Next returns a new id, greater than every id this generator returned
// before. It does not block, sleep or allocate. It panics once the 41-bit
// millisecond field is exhausted (year 2093, or earlier if ids ran that far
// ahead of the clock), because wrapping would break ordering.
func (g *Generator) Next() uint64 {
	ms := g.now().UnixMilli() - epochMS
	if ms < 0 {
		ms = 0 // clock before Epoch: issue from the last id instead
	}
	fresh := uint64(ms)<<timeShift | g.node
	for {
		last := g.last.Load()
		next := fresh
		if next <= last {
			// The clock has not moved past the last id's millisecond
			// (same ms, or the clock went backwards): continue from last.
			if last&MaxSeq < MaxSeq {
				next = last + 1
			} else {
				// Sequence exhausted: borrow the next millisecond.
				next = (last>>timeShift+1)<<timeShift | g.node
			}
		}
		if next>>timeShift > maxMS {
			panic("snowflake: timestamp field exhausted")
		}
		if g.last.CompareAndSwap(last, next) {
			return next
		}
	}
}

// Time returns the millisecond encoded in id, as a UTC time.
func Time(id uint64) time.Time {
	return time.UnixMilli(epochMS + int64(id>>timeShift)).UTC()
}

// Node returns the node id encoded in id.
func Node(id uint64) uint16 {
	return uint16(id >> nodeShift & MaxNode)
}

// Seq returns the sequence number encoded in id.
func Seq(id uint64) uint16 {
	return uint16(id & MaxSeq)
}
