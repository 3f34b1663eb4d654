package service

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// loadTLS builds the TLS configuration of the ssl:// and wss:// brokers from
// MQTT_CA_FILE (a PEM bundle to trust instead of the system's), and
// MQTT_CERT_FILE with MQTT_KEY_FILE (a client certificate). Each connection
// checks the server's certificate against the host it dials. secure tells
// whether MQTT_BROKER has such a broker: files without one are a mistake.
// It returns nil, nil when no file is set. Errors are *Error.
func loadTLS(caFile, certFile, keyFile string, secure bool) (*tls.Config, error) {
	files := []struct{ name, value string }{{"MQTT_CA_FILE", caFile}, {"MQTT_CERT_FILE", certFile}, {"MQTT_KEY_FILE", keyFile}}
	for _, f := range files {
		if f.value != "" && !secure {
			return nil, &Error{Var: f.name, Msg: "is set but no broker of MQTT_BROKER is ssl:// or wss://"}
		}
	}
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, &Error{Var: "MQTT_CA_FILE", Msg: fmt.Sprintf("read: %v", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &Error{Var: "MQTT_CA_FILE", Msg: fmt.Sprintf("%s holds no PEM certificate", caFile)}
		}
		t.RootCAs = pool
	}
	switch {
	case certFile != "" && keyFile != "":
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, &Error{Var: "MQTT_CERT_FILE", Msg: fmt.Sprintf("load with MQTT_KEY_FILE: %v", err)}
		}
		t.Certificates = []tls.Certificate{pair}
	case certFile != "":
		return nil, &Error{Var: "MQTT_KEY_FILE", Msg: "must be set when MQTT_CERT_FILE is"}
	case keyFile != "":
		return nil, &Error{Var: "MQTT_CERT_FILE", Msg: "must be set when MQTT_KEY_FILE is"}
	}
	return t, nil
}
