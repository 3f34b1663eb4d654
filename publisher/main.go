// Command publisher turns HTTP requests into MQTT publications.
package main

import "github.com/telemetry-stack/mqtt-stack/mqttconn/service"

func main() { service.Main("publisher", run) }
