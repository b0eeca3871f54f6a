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

# The plugins' native unit tests, as cargo packages (-p activity ...).
PLUGIN_PACKAGES := $(foreach d,$(wildcard plugins/*/Cargo.toml tests/plugins/*/Cargo.toml),-p $(notdir $(patsubst %/Cargo.toml,%,$(d))))

# One moto S3 server for the whole run (scripts/with-s3.sh); tests that
# fill a disk mount a small tmpfs and need root, as CI has.
#
# The plugins are tested in a cargo run of their own, not with
# `--workspace`: their guest bindings macro (wit-bindgen) turns on the
# `std` feature of anyhow and the `default` feature of indexmap on the
# build-host side, where wasmtime's own bindings macro uses them too.
# Built together, wasmtime's macro (and so wasmtime, wasmtime-wasi and
# vigil) would be compiled with other features than `cargo run -p vigil`
# uses, and `make run` after `make test` would recompile wasmtime (over a
# minute). Apart, `make run` finds every dependency already built.
test: deps-test plugins
	scripts/with-s3.sh $(CARGO) test -p vigil -p vigil-fixture
	$(CARGO) test $(PLUGIN_PACKAGES)

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Dockerfile, Kubernetes and systemd examples (README "Running as a service").
check-packaging:
	scripts/check-packaging.sh
