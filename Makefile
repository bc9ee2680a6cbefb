# The two set-up commands of the README: `go run .` runs the server;
# `make test` installs what the tests need and runs them all.

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test deps vet bench

test: deps vet
	docker-compose -f docker-compose.yml config -q
	go test -race -count=1 -timeout 20m ./...

# Debian packages the tests drive: mosquitto-clients (an independent MQTT client).
deps:
	@command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null || \
		( $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq mosquitto-clients )
	@command -v docker-compose >/dev/null || \
		( $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq docker-compose )

vet:
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed:"; gofmt -l .; exit 1)
	go vet ./...

bench:
	go test -run '^$$' -bench . -benchtime 3s ./store/
	go test -run '^$$' -bench . -benchtime 5x ./media/
	go test -run '^$$' -bench Notify10kDevices -benchtime 3x ./push/
	go test -run '^$$' -bench MessagePath -benchtime 5000x ./push/
