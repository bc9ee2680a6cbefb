# The two set-up commands of the README: `go run .` runs the server;
# `make test` installs what the tests need and runs them all.

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test deps vet compose bench fuzz web-test web-bench cluster-scenarios

test: deps vet compose
	go test -race -count=1 -timeout 20m ./...
	$(MAKE) cluster-scenarios
	$(MAKE) web-test
	$(MAKE) fuzz

# The end-to-end scenarios of the offline, history and relations suites,
# and the push, REST and resend ones, again against a three-node cluster
# (docs/cluster.md §22): the harness's -cluster mode connects the devices to
# a node that does not own the data; then once more with four partitions
# (-partitions 4), where that node owns some users' data and most pairs
# span two partitions. The same tests, not copies; without
# -race (the cluster code's own tests above run under -race). Each test
# starts its own cluster, which is mostly waiting (elections, the first
# balance), so four groups run at once. broker/'s other tests pass in
# -cluster mode too (those that restart the server skip) but test one node's
# listener and broker, which a cluster does not change.
CLUSTER_SCENARIOS := 'TestOfflineFlow|TestSyncCommand|TestLargeBacklogFlowControl|TestRecall' \
	'TestReadReceipts|TestHistoryPaging|TestLiveEvents|TestSendMsgControl|TestSyncSuperseded|TestSenderCopiesReplayed' \
	'TestRelations|TestImageMessageFlow' \
	'TestPushOfflineDeviceGetsOnePerMessage|TestPushSkipped|TestPushCancelledWhenDeviceReturns|TestPushTokens|TestOfflinePushInfoValidation|TestREST|TestIdempotentResend|TestReusedRandomIsANewMessage'
cluster-scenarios:
	go test -c -o broker.test ./broker/
	@set -e; fail=0; for parts in 1 4; do pids=""; i=0; for g in $(CLUSTER_SCENARIOS); do i=$$((i+1)); \
		(cd broker && ../broker.test -test.count=1 -test.timeout 15m -test.run "^($$g)" -cluster -partitions $$parts >../cluster-scenarios.$$i.log 2>&1) & pids="$$pids $$!"; \
	done; pfail=0; for p in $$pids; do wait $$p || pfail=1; done; \
	echo "partitions $$parts:"; for f in cluster-scenarios.*.log; do tail -n 1 $$f; done; \
	if [ $$pfail = 1 ]; then cat cluster-scenarios.*.log; fail=1; fi; rm -f cluster-scenarios.*.log; done; \
	rm -f broker.test; exit $$fail

# The web chat (web/, docs/web.md): the session layer's tests and the
# Playwright suite in Debian's chromium, each against a real duet serve
# built once here. Screenshots land in WEB_ARTIFACTS.
WEB_ARTIFACTS ?= $(CURDIR)/web/test/artifacts
web-test:
	cd web/test && npm ci --no-audit --no-fund --loglevel=error
	@mkdir -p $(WEB_ARTIFACTS)
	go build -o $(WEB_ARTIFACTS)/duet .
	cd web/test && DUET_BIN=$(WEB_ARTIFACTS)/duet ARTIFACTS=$(WEB_ARTIFACTS) node --test --test-timeout 300000 session.test.js failover.test.js browser.test.js
	@rm -f $(WEB_ARTIFACTS)/duet
	@echo "web chat screenshots and measurements: $(WEB_ARTIFACTS)"

# A tab's memory after 10,000 messages scrolled back (about a minute).
web-bench:
	cd web/test && npm ci --no-audit --no-fund --loglevel=error
	@mkdir -p $(WEB_ARTIFACTS)
	go build -o $(WEB_ARTIFACTS)/duet .
	cd web/test && DUET_BIN=$(WEB_ARTIFACTS)/duet node bench10k.js
	@rm -f $(WEB_ARTIFACTS)/duet

# Each fuzz target for a bounded time (FUZZTIME each). `go test` above
# already ran their corpora (seeds in the code and testdata/fuzz/); a new
# failing input is written to testdata/fuzz/ and fails the run.
FUZZTIME ?= 15s
FUZZ_TARGETS := ./command/:FuzzExec ./command/:FuzzMsgBody ./usersig/:FuzzVerify \
	./broker/:FuzzMQTTRequest ./broker/:FuzzMQTTPackets ./hooks/:FuzzRequestID \
	./command/:FuzzStringValue ./store/:FuzzDecodeEntry
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} for $(FUZZTIME)"; \
		go test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) "$${t%%:*}" >fuzz.log 2>&1 || \
			{ cat fuzz.log; rm -f fuzz.log; exit 1; }; \
		tail -n 1 fuzz.log; rm -f fuzz.log; \
	done

# What the tests need: staticcheck, pinned (the version that builds with the
# Go in go.mod); Debian's mosquitto-clients (an independent MQTT client),
# docker-compose (to validate docker-compose.yml), and chromium and Node.js
# for the web chat's browser tests.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(shell go env GOPATH)/bin/staticcheck
deps:
	@$(STATICCHECK) -version 2>/dev/null | grep -q '($(STATICCHECK_VERSION:v%=%))' || \
		go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@command -v chromium >/dev/null || \
		( $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium )
	@command -v node >/dev/null && command -v npm >/dev/null || \
		( $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs npm )
	@command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null || \
		( $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq mosquitto-clients )
	@command -v docker-compose >/dev/null || \
		( $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq docker-compose )

# docker-compose.yml has no default MinIO password: it is valid with one
# (a stand-in here, for the check only) and refused without one.
compose:
	@set -e; none=$$(mktemp); trap 'rm -f "$$none"' EXIT; \
	MINIO_ROOT_PASSWORD=validation-only docker-compose -f docker-compose.yml --env-file "$$none" config -q; \
	if env -u MINIO_ROOT_PASSWORD docker-compose -f docker-compose.yml --env-file "$$none" config -q 2>/dev/null; then \
		echo "docker-compose.yml must refuse to start without MINIO_ROOT_PASSWORD"; exit 1; fi

vet: deps
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed:"; gofmt -l .; exit 1)
	go vet ./...
	$(STATICCHECK) ./...

bench:
	go test -run '^$$' -bench . -benchtime 3s ./store/
	go test -run '^$$' -bench . -benchtime 5x ./media/
	go test -run '^$$' -bench Notify10kDevices -benchtime 3x ./push/
	go test -run '^$$' -bench MessagePath -benchtime 5000x ./push/
