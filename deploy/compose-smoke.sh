#!/usr/bin/env bash
# compose-smoke.sh (make compose-smoke): bring the compose stack up from this
# checkout, check it from outside like a user would, take it down with its
# volumes. Prints one PASS or FAIL line per check; exits 1 if any failed.
#
#   bash deploy/compose-smoke.sh
#
# Needs a Docker engine and `docker compose` (or docker-compose). Ports are
# published on 127.0.0.1 only, each the first free one at or above its
# default (MQTT_PORT, PUBLISHER_PORT, SUBSCRIBER_PORT override). The stack
# runs as its own compose project (COMPOSE_PROJECT_NAME, default
# mqtt-stack-smoke) with passwords made for this run, so it neither uses nor
# touches a stack started with `docker compose up`. KEEP=1 leaves it running.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1

if docker compose version >/dev/null 2>&1; then
	compose=(docker compose)
elif command -v docker-compose >/dev/null; then
	compose=(docker-compose)
else
	echo "FAIL  docker compose: neither 'docker compose' nor docker-compose found"
	exit 1
fi

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-mqtt-stack-smoke}
export BIND_ADDRESS=127.0.0.1
export LOG_FORMAT=text LOG_LEVEL=info API_TOKEN=
nonce=$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')
export PUBLISHER_MQTT_PASSWORD="pub-$nonce" SUBSCRIBER_MQTT_PASSWORD="sub-$nonce"

# in_use PORT: something accepts TCP connections on 127.0.0.1:PORT.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# free_from PORT: the first port at or above PORT that nothing listens on.
free_from() {
	local p=$1
	while in_use "$p"; do p=$((p + 1)); done
	echo "$p"
}
export MQTT_PORT=${MQTT_PORT:-$(free_from 1883)}
export PUBLISHER_PORT=${PUBLISHER_PORT:-$(free_from 8080)}
export SUBSCRIBER_PORT=${SUBSCRIBER_PORT:-$(free_from 8081)}
if [[ $SUBSCRIBER_PORT == "$PUBLISHER_PORT" ]]; then
	SUBSCRIBER_PORT=$(free_from $((PUBLISHER_PORT + 1)))
fi
pub=http://127.0.0.1:$PUBLISHER_PORT
sub=http://127.0.0.1:$SUBSCRIBER_PORT

failed=0
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; failed=1; }
info() { printf 'INFO  %s\n' "$*"; }
dc() { "${compose[@]}" "$@"; }

log=$(mktemp "${TMPDIR:-/tmp}/compose-smoke.XXXXXX")
cleanup() {
	if [[ ${KEEP:-} == 1 ]]; then
		info "KEEP=1: stack left running; stop it with: COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME ${compose[*]} down -v"
	else
		dc down -v --remove-orphans >>"$log" 2>&1 || echo "WARN  docker compose down -v failed; see $log"
	fi
	if ((failed)); then
		echo "RESULT FAIL (compose output: $log)"
	else
		echo "RESULT PASS"
		rm -f "$log"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

info "project $COMPOSE_PROJECT_NAME: mqtt 127.0.0.1:$MQTT_PORT, publisher $pub, subscriber $sub"

# --- up --------------------------------------------------------------------
if dc up -d --build >>"$log" 2>&1; then
	pass "docker compose up -d --build"
else
	fail "docker compose up -d --build (last lines below)"
	tail -n 30 "$log"
	exit 1
fi

# health SERVICE: the health status of the service's (first) container.
health() {
	local id
	id=$(dc ps -q "$1" 2>/dev/null | head -n 1)
	[[ -n $id ]] || { echo missing; return; }
	docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || echo missing
}

deadline=$((SECONDS + 180))
while :; do
	states=() all=1
	for s in mosquitto publisher subscriber; do
		h=$(health "$s")
		states+=("$s=$h")
		[[ $h == healthy ]] || all=0
	done
	((all)) && break
	if ((SECONDS > deadline)); then break; fi
	sleep 2
done
if ((all)); then
	pass "healthy: ${states[*]}"
else
	fail "not healthy within 180s: ${states[*]}"
	dc ps
	dc logs --tail 20
	exit 1
fi

# Image sizes: the issue's limit is 25 MB each.
for s in publisher subscriber; do
	img=$(docker inspect -f '{{.Image}}' "$(dc ps -q "$s" | head -n 1)" 2>/dev/null)
	size=$(docker image inspect -f '{{.Size}}' "$img" 2>/dev/null || echo 0)
	mb=$(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1000000 }')
	if ((size > 0 && size < 25000000)); then
		pass "image size $s: $mb MB (< 25 MB)"
	else
		fail "image size $s: $mb MB (limit 25 MB)"
	fi
done

# --- publish through the publisher ------------------------------------------
topic=living/room1/temperature
payload="21.5 smoke $nonce"
body=$(printf '{"topic":"%s","message":"%s"}' "$topic" "$payload")
resp=$(curl -sS -m 10 -o /dev/stderr -w '%{http_code}' -X POST "$pub/publish" \
	-H 'Content-Type: application/json' -d "$body" 2>"$log.resp")
if [[ $resp == 200 ]]; then
	pass "POST /publish: 200 $(tr -d '\n' <"$log.resp")"
else
	fail "POST /publish: status $resp, body $(tr -d '\n' <"$log.resp")"
fi
rm -f "$log.resp"

# The arrival's log line: msg="message arrived" with the payload.
found=0
for _ in $(seq 1 30); do
	if dc logs --no-color subscriber 2>/dev/null | grep 'message arrived' | grep -q "$nonce"; then
		found=1
		break
	fi
	sleep 0.5
done
if ((found)); then
	pass "docker compose logs subscriber: $(dc logs --no-color subscriber | grep 'message arrived' | grep "$nonce" | head -n 1 | sed 's/^[^|]*| //')"
else
	fail "docker compose logs subscriber: no 'message arrived' line with $nonce"
fi

# Stored: GET /messages with a wildcard filter finds it.
found=0
for _ in $(seq 1 30); do
	if curl -sS -m 5 "$sub/messages?topic=living/%2B/temperature&limit=10" 2>/dev/null | grep -q "$nonce"; then
		found=1
		break
	fi
	sleep 0.5
done
if ((found)); then
	pass "GET /messages?topic=living/+/temperature: the message is stored"
else
	fail "GET /messages?topic=living/+/temperature: no message with $nonce; got $(curl -sS -m 5 "$sub/messages?topic=%23&limit=3")"
fi

# --- broker access control ----------------------------------------------------
# mosquitto_sub inside the broker's container (the image has the clients),
# so the checks need no MQTT client on this machine.
msub() { dc exec -T mosquitto mosquitto_sub -h 127.0.0.1 -p 1883 "$@"; }

out=$(msub -i smoke-anonymous -t '#' -C 1 -W 5 2>&1)
rc=$?
if ((rc != 0)) && grep -qi 'not authori' <<<"$out"; then
	pass "anonymous MQTT client refused ($(tr -d '\n' <<<"$out"))"
else
	fail "anonymous MQTT client not refused: exit $rc, output: $out"
fi

out=$(msub -i smoke-wrong-password -u subscriber -P "wrong-$nonce" -t '#' -C 1 -W 5 2>&1)
rc=$?
if ((rc != 0)) && grep -qi 'not authori' <<<"$out"; then
	pass "wrong password refused"
else
	fail "wrong password not refused: exit $rc, output: $out"
fi

# The publisher's credentials log in but receive nothing, not even a message
# published while they are subscribed to everything.
tmp=$(mktemp)
msub -i smoke-publisher-reads -u publisher -P "$PUBLISHER_MQTT_PASSWORD" -t '#' -v -C 1 -W 6 >"$tmp" 2>&1 &
reader=$!
sleep 2
curl -sS -m 10 -o /dev/null -X POST "$pub/publish" -H 'Content-Type: application/json' \
	-d "$(printf '{"topic":"%s","message":"second %s"}' "$topic" "$nonce")"
wait "$reader"
rc=$?
out=$(cat "$tmp")
rm -f "$tmp"
if grep -qi 'connection error\|refused' <<<"$out"; then
	fail "publisher credentials: login refused, so the read check proves nothing: $out"
elif grep -q "$nonce" <<<"$out" || ((rc == 0)); then
	fail "publisher credentials received a message: $out"
else
	pass "publisher credentials cannot subscribe: nothing received in 6s (exit $rc: $(tr -d '\n' <<<"$out"))"
fi

exit "$failed"
