# The project's commands. `make test` is what CI runs (through .ci/run).
SERVICES := publisher subscriber
MODULES  := $(SERVICES) mqttconn e2e bench
# A number of inputs, not a duration: a time-bounded `go test -fuzz` run here
# now and then ends in "context deadline exceeded" from the fuzzing engine
# itself, with nothing wrong in the target. For a long local run, a duration
# (FUZZTIME=5m) is fine: that error then only means the time was up.
FUZZTIME ?= 50000x
GO       ?= go
# Installed, at the version deploy/install-deps.sh pins, by that script.
STATICCHECK := $(firstword $(subst :, ,$(shell $(GO) env GOPATH)))/bin/staticcheck
# Likewise; it lints the OpenAPI documents with redocly.yaml. Neither
# telemetry nor an update check: the lint stays offline and takes a second.
REDOCLY     := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/mqtt-stack/redocly/node_modules/.bin/redocly

.PHONY: all deps build check unit fuzz test run bench compose-smoke clean

all: build

## build: the two static binaries in bin/, each built alone as its image builds it
build:
	@mkdir -p bin
	@for m in $(SERVICES); do \
		(cd $$m && GOWORK=off CGO_ENABLED=0 $(GO) build -trimpath -o ../bin/$$m .) || exit 1; \
	done

## deps: install what the tests need and this machine lacks (deploy/install-deps.sh)
deps:
	@bash deploy/install-deps.sh

## check: gofmt, go vet, staticcheck, redocly lint of docs/openapi/, and each service building alone with GOWORK=off
check:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done
	@bash deploy/install-deps.sh staticcheck
	@for m in $(MODULES); do (cd $$m && $(STATICCHECK) ./...) || exit 1; done
	@bash deploy/install-deps.sh redocly
	@if [ -x "$(REDOCLY)" ]; then \
		REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true "$(REDOCLY)" lint --format=stylish || exit 1; \
	else echo "check: the OpenAPI lint skipped: no npm to install the Redocly CLI"; fi
	@for m in $(SERVICES); do (cd $$m && GOWORK=off CGO_ENABLED=0 $(GO) build -o /dev/null .) || exit 1; done

## unit: every Go test of every module, the end-to-end ones included
unit:
	@for m in $(MODULES); do (cd $$m && $(GO) test -count=1 -timeout 40m ./...) || exit 1; done

## fuzz: each fuzz target for FUZZTIME inputs, starting from its committed corpus
fuzz:
	@for m in $(SERVICES) mqttconn; do \
		(cd $$m && for pkg in $$($(GO) list ./...); do \
			for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
				echo "fuzz $$pkg $$f"; \
				$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
			done; \
		done) || exit 1; \
	done

## test: everything CI checks, after installing what it needs
test: deps check unit fuzz

## run: a Mosquitto of its own on a free port (unless MQTT_BROKER is given) and both services, without Docker
run:
	@bash deploy/run-local.sh

## bench: the load harness (docs/performance.md): both services against same-run baselines
bench:
	cd bench && $(GO) run .

## compose-smoke: the docker compose stack up, a message through it, and down again
compose-smoke:
	bash deploy/compose-smoke.sh

clean:
	rm -rf bin .run
