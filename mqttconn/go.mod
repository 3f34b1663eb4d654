module github.com/telemetry-stack/mqtt-stack/mqttconn

go 1.26.0

require (
	github.com/eclipse/paho.mqtt.golang v1.5.1
	github.com/go-chi/chi/v5 v5.5.0
	github.com/kelseyhightower/envconfig v1.4.0
	golang.org/x/net v0.59.0
)

require (
	github.com/gorilla/websocket v1.5.3 // indirect
	golang.org/x/sync v0.17.0 // indirect
)
