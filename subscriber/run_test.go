package main

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/subscriber/internal/config"
)

func TestRunConfigErrorNamesVariable(t *testing.T) {
	t.Setenv("MQTT_QOS", "7")
	var out bytes.Buffer
	err := run(context.Background(), []string{"subscriber"}, &out, &out)
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Var != "MQTT_QOS" {
		t.Errorf("run = %v, want a config error naming MQTT_QOS", err)
	}
}

func TestRunUnknownCommand(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"subscriber", "frobnicate"}, &out, &out)
	var ue *usageError
	if !errors.As(err, &ue) {
		t.Errorf("run = %v, want a usage error", err)
	}
}
