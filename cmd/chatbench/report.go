package main

import (
	"github.com/chatd-dev/chatd/bench"
)

// writeDensityReport is filled in when bench/report lands.
func writeDensityReport(dir string, args []string, res *bench.DensityResult, samples []bench.Sample) error {
	return nil
}
