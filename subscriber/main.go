// Command subscriber receives MQTT messages on a persistent session, logs
// and stores each one, and serves them over HTTP.
package main

import "github.com/telemetry-stack/mqtt-stack/mqttconn/service"

func main() { service.Main("subscriber", run) }
