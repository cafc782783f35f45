package bus

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatd-dev/chatd/core/bus/bustest"
)

// TestSecurityAgainstBroker: a broker that requires TLS and SCRAM accepts a
// producer configured through Security, and refuses a wrong password and
// a client without TLS.
func TestSecurityAgainstBroker(t *testing.T) {
	addrs, caFile := bustest.StartSecureBroker(t, "chatd", "s3cret", 1, TopicInbound)
	produce := func(sec Security) error {
		tc, mech, err := sec.Build()
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{Brokers: addrs, TLS: tc, SASL: mech}
		cl := newClient(t, append(cfg.ProducerOpts(), kgo.RecordDeliveryTimeout(3*time.Second))...)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return cl.ProduceSync(ctx, &kgo.Record{Topic: TopicInbound, Key: []byte("k"), Value: []byte("v")}).FirstErr()
	}
	if err := produce(Security{CAFile: caFile, SASL: "scram-sha-256", User: "chatd", Password: "s3cret"}); err != nil {
		t.Fatalf("TLS + SCRAM: %v", err)
	}
	if err := produce(Security{CAFile: caFile, SASL: "scram-sha-256", User: "chatd", Password: "wrong"}); err == nil {
		t.Error("wrong password: produced")
	}
	if err := produce(Security{SASL: "scram-sha-256", User: "chatd", Password: "s3cret"}); err == nil {
		t.Error("no TLS: produced")
	}
	if err := produce(Security{TLS: true, SASL: "scram-sha-256", User: "chatd", Password: "s3cret"}); err == nil {
		t.Error("TLS with the system roots accepted a self-signed broker")
	}
}

func TestSecurityBuildErrors(t *testing.T) {
	for name, s := range map[string]Security{
		"unknown mechanism": {SASL: "kerberos", User: "u"},
		"sasl without user": {SASL: "plain"},
		"cert without key":  {CertFile: "c.pem"},
		"missing CA file":   {CAFile: filepath.Join(t.TempDir(), "none.pem")},
	} {
		if _, _, err := s.Build(); err == nil {
			t.Errorf("%s: Build = nil error", name)
		}
	}
	tc, mech, err := Security{}.Build()
	if err != nil || tc != nil || mech != nil {
		t.Errorf("zero Security: %v %v %v, want nothing", tc, mech, err)
	}
}
