package e2e

import (
	"os"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/e2e/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
