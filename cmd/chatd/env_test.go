package main

import (
	"flag"
	"strings"
	"testing"
)

func TestFlagsFromEnv(t *testing.T) {
	fs := flag.NewFlagSet("chatd", flag.ContinueOnError)
	brokers := fs.String("brokers", "", "")
	parts := fs.Int("partitions", 8, "")
	redis := fs.String("redis", "", "")
	if err := fs.Parse([]string{"--redis", "cli:6379"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"CHATD_BROKERS":    "k1:9092,k2:9092",
		"CHATD_PARTITIONS": "16",
		"CHATD_REDIS":      "env:6379", // the command line wins
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := flagsFromEnv(fs, lookup); err != nil {
		t.Fatal(err)
	}
	if *brokers != "k1:9092,k2:9092" || *parts != 16 || *redis != "cli:6379" {
		t.Fatalf("brokers %q partitions %d redis %q", *brokers, *parts, *redis)
	}

	fs2 := flag.NewFlagSet("chatd", flag.ContinueOnError)
	fs2.Int("partitions", 8, "")
	_ = fs2.Parse(nil)
	err := flagsFromEnv(fs2, func(k string) (string, bool) { return "many", k == "CHATD_PARTITIONS" })
	if err == nil || !strings.Contains(err.Error(), "CHATD_PARTITIONS") {
		t.Fatalf("bad value: %v, want an error naming CHATD_PARTITIONS", err)
	}
}
