package store

// OpenPebbleFS opens a Pebble store on a given vfs.FS (tests only).
var OpenPebbleFS = openPebble

// BlockCacheStats reports the block cache's entries, hits and misses.
func (p *Pebble) BlockCacheStats() (count, hits, misses int64) {
	m := p.db.Metrics()
	return m.BlockCache.Count, m.BlockCache.Hits, m.BlockCache.Misses
}
