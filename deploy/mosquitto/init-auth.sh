#!/bin/sh
# init-auth.sh: run by the one-shot service mosquitto-init (image
# eclipse-mosquitto:2, as root) before the broker starts. Writes into the
# auth volume, for mosquitto.conf's password_file and acl_file:
#   passwd       salted hashes (mosquitto_passwd) of the users publisher and
#                subscriber, from PUBLISHER_MQTT_PASSWORD and
#                SUBSCRIBER_MQTT_PASSWORD, and of the user healthcheck;
#   acl          a copy of deploy/mosquitto/acl (mounted at /acl);
#   healthcheck  the random password of the user healthcheck, which the
#                broker's own health check reads; made once and kept, so that
#                a broker that is already running still accepts it.
# Every file is owned by the broker's user and mode 0600: Mosquitto reads them
# after dropping root, and newer 2.0 releases warn about (later refuse) files
# that others can read. Clear-text passwords never reach the disk.
set -eu

dir=${AUTH_DIR:-/mosquitto/auth}
acl_src=${ACL_SOURCE:-/acl}
owner=${MOSQUITTO_OWNER:-1883:1883}

: "${PUBLISHER_MQTT_PASSWORD:?PUBLISHER_MQTT_PASSWORD is empty}"
: "${SUBSCRIBER_MQTT_PASSWORD:?SUBSCRIBER_MQTT_PASSWORD is empty}"

umask 077
mkdir -p "$dir"

if [ ! -s "$dir/healthcheck" ]; then
	# 24 random bytes as hex: no characters a shell or mosquitto_passwd minds.
	od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$dir/healthcheck.tmp"
	mv "$dir/healthcheck.tmp" "$dir/healthcheck"
fi

rm -f "$dir/passwd.tmp"
: >"$dir/passwd.tmp"
mosquitto_passwd -b "$dir/passwd.tmp" publisher "$PUBLISHER_MQTT_PASSWORD"
mosquitto_passwd -b "$dir/passwd.tmp" subscriber "$SUBSCRIBER_MQTT_PASSWORD"
mosquitto_passwd -b "$dir/passwd.tmp" healthcheck "$(cat "$dir/healthcheck")"
cp "$acl_src" "$dir/acl.tmp"

for f in passwd acl; do
	chmod 0600 "$dir/$f.tmp"
	mv "$dir/$f.tmp" "$dir/$f"
done
chmod 0700 "$dir"
chmod 0600 "$dir/healthcheck"
chown -R "$owner" "$dir"
echo "mosquitto-init: wrote $dir/passwd (publisher, subscriber, healthcheck) and $dir/acl"
