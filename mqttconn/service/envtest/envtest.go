// Package envtest starts a test of a service's configuration from a clean
// environment: none of the variables the service reads is set but those
// the test names.
package envtest

import (
	"os"
	"reflect"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
)

// Set unsets, for the rest of t, every variable of service.Common and the
// service's own (extra), then sets env.
func Set(t testing.TB, env map[string]string, extra ...string) {
	t.Helper()
	common := reflect.TypeFor[service.Common]()
	for i := range common.NumField() {
		if v := common.Field(i).Tag.Get("envconfig"); v != "" {
			extra = append(extra, v)
		}
	}
	for _, v := range extra {
		t.Setenv(v, "") // registers the restore
		if err := os.Unsetenv(v); err != nil {
			t.Fatalf("unset %s: %v", v, err)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}
