#!/bin/sh
# init-auth.sh: run by the one-shot service nats-init (profile nats of
# docker-compose.yml, image nats:<version>-alpine) before the NATS nodes
# start. Writes $AUTH_DIR/users.conf, which every node's configuration
# includes (deploy/nats/nats-<n>.conf, rendered from nats.conf.tmpl): the
# users publisher and subscriber with the passwords PUBLISHER_MQTT_PASSWORD
# and SUBSCRIBER_MQTT_PASSWORD, each written as a double-quoted string of the
# NATS configuration format, so that any password is taken as it is (NATS
# would parse a password taken from the environment as a configuration
# value: 1234 becomes a number, and a # starts a comment). NATS has no tool
# in its image to hash them: the file holds them in clear, mode 0600, in a
# volume that only the NATS containers mount.
set -eu

dir=${AUTH_DIR:-/auth}

: "${PUBLISHER_MQTT_PASSWORD:?PUBLISHER_MQTT_PASSWORD is empty}"
: "${SUBSCRIBER_MQTT_PASSWORD:?SUBSCRIBER_MQTT_PASSWORD is empty}"

# quote prints $1 as a double-quoted string: backslash and double quote
# escaped, the rest as it is.
quote() {
	printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

umask 077
mkdir -p "$dir"
{
	# printf, not echo: sh's echo would take the backslashes as escapes.
	printf '%s\n' "# Written by nats-init (deploy/nats/init-auth.sh) at every start." \
		"authorization {" \
		"  users: [" \
		"    {user: \"publisher\", password: $(quote "$PUBLISHER_MQTT_PASSWORD")}" \
		"    {user: \"subscriber\", password: $(quote "$SUBSCRIBER_MQTT_PASSWORD")}" \
		"  ]" \
		"}"
} >"$dir/users.conf.tmp"
mv "$dir/users.conf.tmp" "$dir/users.conf"
echo "nats-init: wrote $dir/users.conf (publisher, subscriber)"
