#!/usr/bin/env bash
# install-deps.sh: installs what `make test` needs and this machine lacks.
# `make test` and .ci/run both run it; it does nothing when all is there.
#
#   bash deploy/install-deps.sh              everything below
#   bash deploy/install-deps.sh staticcheck  only staticcheck (make check)
#   bash deploy/install-deps.sh redocly      only the Redocly CLI (make check)
#
# With root (or sudo without a password) and apt-get, on Debian 12, it
# installs the missing packages: mosquitto and mosquitto-clients (the tests
# start brokers of their own on free ports, never the system's), PostgreSQL
# (a new cluster gets trust authentication, and is started, on
# 127.0.0.1:5432), chromium (the web console's browser test),
# docker-compose (`docker compose config` validates the compose file, no
# engine needed) and npm (with Node.js, for the Redocly CLI). Elsewhere it
# prints what to install and goes on: outside CI a test whose dependency is
# missing is skipped, with CI=true it fails.
# staticcheck, at the version pinned below, comes from the Go module proxy
# (go install) into $(go env GOPATH)/bin, where the Makefile runs it. The
# Redocly CLI (redocly lint of docs/openapi/), at the version pinned below,
# comes from the npm registry into the user's cache directory
# ($XDG_CACHE_HOME or ~/.cache, then mqtt-stack/redocly); without npm it is
# skipped outside CI and an error with CI=true. Its 1.x line runs on
# Debian 12's Node.js 18; 2.x needs Node.js 20.19.
# Go itself (1.26) must be there already: Debian's is too old.
set -euo pipefail

STATICCHECK_VERSION=v0.8.2 # honnef.co/go/tools; make check runs it
REDOCLY_VERSION=1.34.20    # @redocly/cli; make check runs it (Makefile: REDOCLY)
REDOCLY_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/mqtt-stack/redocly"

say() { printf 'install-deps: %s\n' "$*" >&2; }

# has CMD: CMD is in PATH or in the sbin directories a non-root PATH lacks
# (Debian installs mosquitto in /usr/sbin).
has() {
	command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /usr/local/sbin/$1 || -x /sbin/$1 ]]
}

# postgres_answers: something takes connections on 127.0.0.1:5432
# (pg_isready comes with the PostgreSQL client, which may be missing).
postgres_answers() {
	if command -v pg_isready >/dev/null; then
		pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null
	else
		(exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
	fi
}

install_staticcheck() {
	local gobin bin
	command -v go >/dev/null || { say "go not found in PATH: install Go 1.26 (https://go.dev/dl/)"; return 1; }
	gobin="$(go env GOPATH | cut -d: -f1)/bin"
	bin="$gobin/staticcheck"
	if [[ -x $bin ]] && "$bin" -version 2>/dev/null | grep -q "(${STATICCHECK_VERSION#v})"; then
		return 0
	fi
	say "installing staticcheck $STATICCHECK_VERSION into $gobin"
	GOBIN="$gobin" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
}

# install_redocly: the pinned @redocly/cli in REDOCLY_DIR. Without npm it
# fails with CI=true (CI must lint) and is skipped otherwise, as the tests
# skip what they lack.
install_redocly() {
	local pkg="$REDOCLY_DIR/node_modules/@redocly/cli/package.json"
	if [[ -x $REDOCLY_DIR/node_modules/.bin/redocly ]] && grep -q "\"version\": \"$REDOCLY_VERSION\"" "$pkg" 2>/dev/null; then
		return 0
	fi
	if ! command -v npm >/dev/null; then
		if [[ ${CI:-} == true ]]; then
			say "npm not found: it installs the Redocly CLI that lints docs/openapi/ (apt-get install npm)"
			return 1
		fi
		say "npm not found: the OpenAPI lint is skipped (apt-get install npm, then make check)"
		return 0
	fi
	say "installing @redocly/cli $REDOCLY_VERSION into $REDOCLY_DIR"
	mkdir -p "$REDOCLY_DIR"
	npm install --prefix "$REDOCLY_DIR" --no-audit --no-fund --ignore-scripts --loglevel=error \
		"@redocly/cli@$REDOCLY_VERSION" >/dev/null
}

case ${1:-} in
staticcheck)
	install_staticcheck
	exit
	;;
redocly)
	install_redocly
	exit
	;;
esac

# --- packages ------------------------------------------------------------------
missing=()
has make || missing+=(make)
has mosquitto && has mosquitto_passwd || missing+=(mosquitto)
has mosquitto_pub && has mosquitto_sub || missing+=(mosquitto-clients)
has chromium || missing+=(chromium)
docker compose version >/dev/null 2>&1 || has docker-compose || missing+=(docker-compose)
has npm || missing+=(npm)
new_postgres=
if ! ls /etc/postgresql/*/main >/dev/null 2>&1 && ! postgres_answers; then
	missing+=(postgresql)
	new_postgres=1
fi

as_root=()
if ((${#missing[@]})); then
	if [[ $(id -u) != 0 ]] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		as_root=(sudo -n)
	fi
	if command -v apt-get >/dev/null && { [[ $(id -u) == 0 ]] || ((${#as_root[@]})); }; then
		say "installing ${missing[*]}"
		"${as_root[@]}" apt-get update -qq
		"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	else
		say "missing: ${missing[*]}; install them as root, e.g. apt-get install ${missing[*]}"
		new_postgres=
	fi
fi

# --- PostgreSQL on 127.0.0.1:5432, user postgres without a password -------------
# The tests create and drop databases of their own (TEST_POSTGRES_URL points
# them elsewhere). Only a cluster installed here is given trust
# authentication: an existing one is left as its owner set it.
if ls /etc/postgresql/*/main >/dev/null 2>&1; then
	version=$(ls /etc/postgresql | sort -V | tail -n1)
	if [[ -n $new_postgres ]]; then
		"${as_root[@]}" sed -i -E 's/^(host|local)(.*)(scram-sha-256|md5|peer)$/\1\2trust/' /etc/postgresql/"$version"/main/pg_hba.conf
	fi
	if postgres_answers; then
		# Started by the package before its pg_hba.conf was changed.
		[[ -z $new_postgres ]] || "${as_root[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main reload
	elif [[ $(id -u) == 0 ]] || ((${#as_root[@]})); then
		say "starting PostgreSQL $version"
		"${as_root[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
		for _ in $(seq 1 30); do
			postgres_answers && break
			sleep 1
		done
	else
		say "PostgreSQL $version does not answer on 127.0.0.1:5432: start it (pg_ctlcluster $version main start, as root)"
	fi
fi

install_staticcheck
install_redocly
