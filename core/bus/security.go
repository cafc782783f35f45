package bus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Security says how to secure connections to external brokers, in the
// terms an operator configures (files and names); Build turns it into
// Config.TLS and Config.SASL.
type Security struct {
	// TLS dials the brokers with TLS. Implied by any of the files below.
	TLS bool
	// CAFile is a PEM bundle of the CAs that sign the brokers'
	// certificates; empty uses the system roots.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// brokers that require mutual TLS. Both or neither.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the brokers' certificates
	// (default: the host of the address dialled).
	ServerName string
	// SASL is the mechanism: "" (none), "plain", "scram-sha-256" or
	// "scram-sha-512". PLAIN sends the password as is: use it only with
	// TLS.
	SASL     string
	User     string
	Password string
}

// Build returns the TLS config (nil without TLS) and SASL mechanism (nil
// without SASL) for Config.
func (s Security) Build() (*tls.Config, sasl.Mechanism, error) {
	var tc *tls.Config
	if s.TLS || s.CAFile != "" || s.CertFile != "" || s.KeyFile != "" || s.ServerName != "" {
		tc = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.ServerName}
		if s.CAFile != "" {
			pem, err := os.ReadFile(s.CAFile)
			if err != nil {
				return nil, nil, fmt.Errorf("bus: kafka CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, nil, fmt.Errorf("bus: kafka CA %s: no PEM certificate in it", s.CAFile)
			}
			tc.RootCAs = pool
		}
		if (s.CertFile == "") != (s.KeyFile == "") {
			return nil, nil, errors.New("bus: kafka client certificate: give both the certificate and the key")
		}
		if s.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
			if err != nil {
				return nil, nil, fmt.Errorf("bus: kafka client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
	}
	var mech sasl.Mechanism
	switch m := strings.ToLower(s.SASL); m {
	case "", "none":
	case "plain", "scram-sha-256", "scram-sha-512":
		if s.User == "" {
			return nil, nil, fmt.Errorf("bus: kafka SASL %s needs a user", m)
		}
		switch m {
		case "plain":
			mech = plain.Auth{User: s.User, Pass: s.Password}.AsMechanism()
		case "scram-sha-256":
			mech = scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism()
		default:
			mech = scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism()
		}
	default:
		return nil, nil, fmt.Errorf("bus: unknown kafka SASL mechanism %q (want plain, scram-sha-256 or scram-sha-512)", s.SASL)
	}
	return tc, mech, nil
}
