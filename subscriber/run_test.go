package main

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
)

func TestRunConfigErrorNamesVariable(t *testing.T) {
	t.Setenv("MQTT_QOS", "7")
	var out bytes.Buffer
	err := run(context.Background(), []string{"subscriber"}, &out, &out)
	var ce *service.Error
	if !errors.As(err, &ce) || ce.Var != "MQTT_QOS" {
		t.Errorf("run = %v, want a config error naming MQTT_QOS", err)
	}
}

func TestRunUnknownCommand(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"subscriber", "frobnicate"}, &out, &out)
	if got := service.ExitCode(err); got != 2 {
		t.Errorf("run = %v, exit status %d; want a usage error, status 2", err, got)
	}
}
