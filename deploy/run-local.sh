#!/usr/bin/env bash
# run-local.sh (make run): the stack on this machine without Docker.
#
#   1. Mosquitto: unless something already answers on 127.0.0.1:MQTT_PORT,
#      starts `mosquitto` from PATH with a copy of the repository's
#      mosquitto.conf in .run/mosquitto/ in which only the paths and the
#      listener (127.0.0.1:MQTT_PORT) are replaced, a password file generated
#      by deploy/mosquitto/init-auth.sh and the repository's ACL;
#   2. the publisher on 127.0.0.1:PUBLISHER_PORT and the subscriber on
#      127.0.0.1:SUBSCRIBER_PORT (SQLite in .run/data/ unless DATABASE_URL is
#      set), built from this checkout, with the broker's credentials.
# Logs go to the terminal, each line prefixed with its process' name (the
# broker's to .run/mosquitto/mosquitto.log). Ctrl-C stops all of it: the
# services first, so that they publish `offline`, then the broker.
#
# Environment (defaults): MQTT_PORT (1883), PUBLISHER_PORT (8080),
# SUBSCRIBER_PORT (8081), PUBLISHER_MQTT_PASSWORD and
# SUBSCRIBER_MQTT_PASSWORD (the defaults of docker-compose.yml), RUN_DIR
# (.run). Any other variable of the services (LOG_FORMAT, MQTT_TOPICS,
# DATABASE_URL, API_TOKEN, ...) is passed through.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
run=${RUN_DIR:-$root/.run}
mqtt_port=${MQTT_PORT:-1883}
pub_port=${PUBLISHER_PORT:-8080}
sub_port=${SUBSCRIBER_PORT:-8081}
export PUBLISHER_MQTT_PASSWORD=${PUBLISHER_MQTT_PASSWORD:-publisher-change-me}
export SUBSCRIBER_MQTT_PASSWORD=${SUBSCRIBER_MQTT_PASSWORD:-subscriber-change-me}

say() { printf 'run-local: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# answers PORT: something accepts TCP connections on 127.0.0.1:PORT.
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# find_cmd NAME: NAME from PATH, or from the sbin directories that a
# non-root PATH often lacks (Debian installs mosquitto in /usr/sbin).
find_cmd() {
	command -v "$1" 2>/dev/null && return
	local d
	for d in /usr/local/sbin /usr/sbin /sbin; do
		[[ -x $d/$1 ]] && { echo "$d/$1"; return; }
	done
	return 1
}

for p in "$pub_port" "$sub_port"; do
	answers "$p" && die "127.0.0.1:$p is in use (set PUBLISHER_PORT / SUBSCRIBER_PORT)"
done
command -v go >/dev/null || die "go not found in PATH"
mkdir -p "$run/bin" "$run/data" "$run/mosquitto/data"

pids=() names=()

# start NAME CMD...: run CMD in the background, its output prefixed by NAME.
# Job control is on while it starts, so that CMD gets a process group of its
# own: Ctrl-C then reaches only this script (and its `sleep`), which stops
# the processes in order: services first (they publish `offline`), broker
# last.
start() {
	local name=$1
	shift
	set -m
	"$@" > >(awk -v p="$(printf '%-10s | ' "$name")" '{ print p $0; fflush() }') 2>&1 &
	pids+=("$!")
	set +m
	names+=("$name")
}

# stop_one PID: SIGTERM to the process alone (its output pipe stays open for
# its last lines), up to 15s for a graceful exit, then SIGKILL to its group.
stop_one() {
	local pid=$1 n=0
	kill -TERM "$pid" 2>/dev/null || return 0
	while kill -0 "$pid" 2>/dev/null && ((n < 150)); do
		sleep 0.1
		n=$((n + 1))
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "process $pid did not stop within 15s: killing its process group"
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

stopping=0
stop_all() {
	((stopping)) && return
	stopping=1
	local i
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		stop_one "${pids[i]}"
	done
	wait 2>/dev/null || true # the log prefixers, which end with their process
}
trap 'stop_all' EXIT
trap 'say "stopping"; stop_all; exit 130' INT TERM

# --- broker ------------------------------------------------------------------
# The publisher's MQTT_MAX_INFLIGHT must not exceed the broker's
# max_inflight_messages: with the repository's mosquitto.conf both are that
# file's value; a broker found running keeps the publisher's default (20,
# Mosquitto's own default) unless MQTT_MAX_INFLIGHT says otherwise.
max_inflight=${MQTT_MAX_INFLIGHT:-}
if answers "$mqtt_port"; then
	say "a broker already answers on 127.0.0.1:$mqtt_port: using it (it must accept the users publisher and subscriber with PUBLISHER_MQTT_PASSWORD and SUBSCRIBER_MQTT_PASSWORD, or anonymous clients)"
else
	if [[ -z $max_inflight ]]; then
		max_inflight=$(awk '$1 == "max_inflight_messages" { print $2 }' "$root/mosquitto.conf")
		[[ $max_inflight =~ ^[0-9]+$ ]] || die "mosquitto.conf: no max_inflight_messages"
	fi
	mosquitto=$(find_cmd mosquitto) || die "mosquitto not found (install Eclipse Mosquitto 2, or start a broker on port $mqtt_port)"
	find_cmd mosquitto_passwd >/dev/null || die "mosquitto_passwd not found"
	PATH=$PATH:$(dirname "$(find_cmd mosquitto_passwd)") \
		AUTH_DIR="$run/mosquitto/auth" ACL_SOURCE="$root/deploy/mosquitto/acl" \
		MOSQUITTO_OWNER="$(id -u):$(id -g)" sh "$root/deploy/mosquitto/init-auth.sh" >/dev/null
	# The repository's settings with this run's paths and listener. As root,
	# Mosquitto would drop to the user "mosquitto", which cannot read .run/.
	sed -e "s#^listener 1883\$#listener $mqtt_port 127.0.0.1#" \
		-e "s#/mosquitto/auth/#$run/mosquitto/auth/#g" \
		-e "s#/mosquitto/data/#$run/mosquitto/data/#g" \
		"$root/mosquitto.conf" >"$run/mosquitto/mosquitto.conf"
	[[ $(id -u) == 0 ]] && echo "user root" >>"$run/mosquitto/mosquitto.conf"
	start mosquitto sh -c 'exec "$0" -c "$1" 2>>"$2"' "$mosquitto" "$run/mosquitto/mosquitto.conf" "$run/mosquitto/mosquitto.log"
	for _ in $(seq 1 50); do
		answers "$mqtt_port" && break
		kill -0 "${pids[0]}" 2>/dev/null || die "mosquitto exited; see $run/mosquitto/mosquitto.log"
		sleep 0.1
	done
	answers "$mqtt_port" || die "mosquitto does not answer on 127.0.0.1:$mqtt_port; see $run/mosquitto/mosquitto.log"
	say "mosquitto on 127.0.0.1:$mqtt_port (log: $run/mosquitto/mosquitto.log)"
fi

# --- services ----------------------------------------------------------------
for svc in publisher subscriber; do
	say "building $svc"
	# Each module builds alone, as in its Dockerfile.
	(cd "$root/$svc" && GOWORK=off go build -o "$run/bin/$svc" .) || die "go build $svc failed"
done

start publisher env \
	MQTT_BROKER="tcp://127.0.0.1:$mqtt_port" \
	MQTT_USERNAME=publisher MQTT_PASSWORD="$PUBLISHER_MQTT_PASSWORD" \
	${max_inflight:+MQTT_MAX_INFLIGHT="$max_inflight"} \
	HTTP_ADDR="127.0.0.1:$pub_port" \
	CORS_ALLOWED_ORIGINS="${CORS_ALLOWED_ORIGINS:-http://localhost:$sub_port,http://127.0.0.1:$sub_port}" \
	"$run/bin/publisher"
start subscriber env \
	MQTT_BROKER="tcp://127.0.0.1:$mqtt_port" \
	MQTT_USERNAME=subscriber MQTT_PASSWORD="$SUBSCRIBER_MQTT_PASSWORD" \
	HTTP_ADDR="127.0.0.1:$sub_port" \
	PUBLISHER_URL="${PUBLISHER_URL:-http://localhost:$pub_port}" \
	DATABASE_URL="${DATABASE_URL:-sqlite:$run/data/messages.db}" \
	"$run/bin/subscriber"

ready() { curl -fsS -m 1 -o /dev/null "$1/readyz" 2>/dev/null; }
for _ in $(seq 1 100); do
	ready "http://127.0.0.1:$pub_port" && ready "http://127.0.0.1:$sub_port" && break
	sleep 0.2
done
if ready "http://127.0.0.1:$pub_port" && ready "http://127.0.0.1:$sub_port"; then
	say "ready: publisher http://127.0.0.1:$pub_port, subscriber http://127.0.0.1:$sub_port (Ctrl-C stops all)"
	say "try: curl -X POST localhost:$pub_port/publish -H 'Content-Type: application/json' -d '{\"topic\":\"living/room1/temperature\",\"message\":\"21.5\"}'"
	say "     curl 'localhost:$sub_port/messages?topic=living/%2B/temperature'"
else
	say "not ready after 20s (see the logs above); still running, Ctrl-C stops all"
fi

# Run until Ctrl-C, or until a process ends by itself (then stop the rest).
while :; do
	for i in "${!pids[@]}"; do
		if ! kill -0 "${pids[i]}" 2>/dev/null; then
			wait "${pids[i]}" && rc=0 || rc=$?
			say "${names[i]} exited (status $rc); stopping the rest"
			exit 1
		fi
	done
	sleep 1
done
