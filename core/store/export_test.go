package store

// OpenPebbleFS opens a Pebble store on a given vfs.FS (tests only).
var OpenPebbleFS = openPebble
