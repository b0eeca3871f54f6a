# The two commands a new user needs:
#   make run    install what is missing, build the plugins, run Vigil on the example config
#   make test   install what is missing, build the plugins, run every test
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test deps deps-test plugins policy-examples check check-packaging

deps:
	scripts/install-deps.sh run

deps-test:
	scripts/install-deps.sh test

# Policies, built to wasm32-wasip2 into target/plugins/ (and the test-only
# ones into target/test-plugins/); see README "Policies".
plugins: deps
	scripts/build-plugins.sh

# The example policies in Python and JavaScript (examples/policies/), into
# target/policy-examples/; the tests build them too.
policy-examples: deps-test
	scripts/build-policy-examples.sh

run: deps plugins
	$(CARGO) run -p vigil -- run --config examples/vigil.toml

# One moto S3 server for the whole run (scripts/with-s3.sh); tests that
# fill a disk mount a small tmpfs and need root, as CI has.
test: deps-test plugins
	scripts/with-s3.sh $(CARGO) test --workspace

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Dockerfile, Kubernetes and systemd examples (README "Running as a service").
check-packaging:
	scripts/check-packaging.sh
