# ferrocorn's developer tasks. `make run` serves the example Flask app; `make test` runs every
# test. Everything is installed into .venv; stamp files inside it make each step run only when
# its inputs changed (delete .venv and everything is redone).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.ferrocorn

# One target/ for every build: the release wheel (maturin) and cargo test/clippy share it.
unexport CARGO_TARGET_DIR
# pyo3's build script reruns when PYO3_PYTHON changes, so cargo and maturin must agree on it.
export PYO3_PYTHON := $(abspath $(PY))

# The wheel is rebuilt when any of these change (the PGO build trains on bench/apps).
SOURCES := $(shell find crates python -type f -not -path '*/__pycache__/*' -not -name '*.so') \
	Cargo.toml $(wildcard Cargo.lock) pyproject.toml README.md tools/pgo_build.py \
	$(wildcard bench/apps/*.py)

# PGO=1 (the default) builds the wheel with profile-guided optimisation (tools/pgo_build.py:
# an instrumented build serves a short training load first); PGO=0 builds it in one pass.
PGO ?= 1

# Programs the integration tests drive, as Debian names them.
# COMMAND or COMMAND:DEBIAN-PACKAGE when the package has another name.
TEST_TOOLS := curl nginx wrk h2load:nghttp2-client openssl

.PHONY: help venv build install run test-deps test test-wheels wheels lint docs bench clean

help:
	@echo "make run        build a release build into .venv and serve examples/flask_app.py"
	@echo "                at http://127.0.0.1:8000"
	@echo "make test       install what the tests need, then cargo test and pytest"
	@echo "make install    (re)build the manylinux2014 release wheel (PGO; PGO=0 for one pass)"
	@echo "                into dist/ and .venv"
	@echo "make wheels     the release wheels (manylinux2014 and musllinux_1_2, x86_64, one per"
	@echo "                CPython found) and the sdist, into wheelhouse/"
	@echo "make test-wheels  build them, then install each into a fresh venv and serve (slow)"
	@echo "make bench      ferrocorn vs gunicorn and granian, side by side (BENCH_ARGS=--quick)"
	@echo "make lint       cargo fmt --check, clippy -D warnings and ruff (what CI runs first)"
	@echo "make docs       regenerate docs/settings.md from the settings' declaration"
	@echo "make clean      remove build outputs (keeps .venv)"

venv: $(STAMP)-venv

$(STAMP)-venv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet 'maturin>=1.5,<2' flask
	@touch $@

# maturin builds the release wheel in target/ (incremental: only the crates that changed are
# recompiled), then pip swaps it into the venv: ferrocorn itself always (same version number,
# new build), its dependencies only when missing. It is the manylinux2014 wheel `make wheels`
# builds for this interpreter (linked with zig, checked by maturin for its tag): what a user
# gets from the package index is what the tests and the benchmarks run, and
# tests/test_wheels.py installs dist/'s wheel into a fresh venv with no Rust toolchain.
# zig (the ziglang package, maturin's --zig) links the wheel for glibc 2.17; auditwheel is
# pypa's own check of a wheel's tag (tests/test_wheels.py). Pinned to a minor release.
GNU_TARGET := x86_64-unknown-linux-gnu
$(STAMP)-zig: $(STAMP)-venv Makefile
	$(PIP) install --quiet 'maturin[zig]>=1.5,<2' 'ziglang>=0.17,<0.18' 'auditwheel>=6.8,<6.9'
	@touch $@

build install: $(STAMP)-install

$(STAMP)-install: $(STAMP)-venv $(STAMP)-zig $(SOURCES)
	rm -f dist/ferrocorn-*.whl
	$(PY) tools/pgo_build.py $(if $(filter 1,$(PGO)),,--one-pass) --python $(PY) --out dist \
		--target $(GNU_TARGET) --zig --compatibility manylinux2014
	$(PIP) install --quiet --force-reinstall --no-deps dist/ferrocorn-*.whl
	$(PIP) install --quiet dist/ferrocorn-*.whl  # its dependencies, if any are missing
	@touch $@

run: install
	$(VENV)/bin/ferrocorn -b 127.0.0.1:8000 --chdir examples flask_app:app

test-deps: $(STAMP)-test-deps
	@missing=""; \
	for tool in $(TEST_TOOLS); do \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $${tool%%:*} >/dev/null 2>&1 || missing="$$missing $${tool#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null 2>&1; then \
			sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
			echo "Installing$$missing with apt-get"; \
			$$sudo apt-get update -qq; \
			$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		else \
			echo "warning: no apt-get here; install$$missing by hand, the tests need them" >&2; \
		fi; \
	fi

# ASGI: the differential test runs the same Starlette, FastAPI and Quart apps under Uvicorn
# (with httptools and uvloop, as its [standard] extra), httpx is the tests' ASGI-aware client;
# test_asgi_frameworks.py serves Quart and a Django project's asgi.py; test_websocket_asgi.py
# a Django Channels consumer (pinned: its consumers' API is what the test drives).
$(STAMP)-test-deps: $(STAMP)-venv Makefile
	$(PIP) install --quiet pytest flask h2 cryptography 'tomli; python_version < "3.11"'
	$(PIP) install --quiet starlette fastapi python-multipart httpx 'uvicorn[standard]' \
		quart django
	$(PIP) install --quiet flask-sock flask-socketio simple-websocket websockets wsproto \
		'python-socketio[client]'
	$(PIP) install --quiet 'channels==4.3.2'
	@touch $@

# -rs lists every skip; FERROCORN_STRICT_SKIPS=1 fails the run when a test was skipped for a
# reason this Makefile should have removed (a tool test-deps installs; not root, in CI): the
# reasons a host may truly lack are listed in tests/support/skips.py.
test: test-deps install
	cargo test --workspace
	FERROCORN_STRICT_SKIPS=1 $(PY) -m pytest -q -rs -m "not wheels" tests

# The release wheels (docs/install.md). maturin links them with zig (from the ziglang package)
# for glibc 2.17 and for musl, and checks each against its tag; tools/pgo_build.py builds them
# profile-guided: one training run per target, one final build per interpreter.
WHEELHOUSE := wheelhouse
# The interpreters to build for: auto finds one per supported CPython version (3.9 to 3.14,
# python3.X on PATH or under pyenv); or a list of names or paths.
WHEEL_PYTHONS ?= auto
MUSL_TARGET := x86_64-unknown-linux-musl

$(STAMP)-wheel-deps: $(STAMP)-zig
	@rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET)
	@touch $@

wheels: $(WHEELHOUSE)/.built

$(WHEELHOUSE)/.built: $(STAMP)-wheel-deps $(SOURCES) $(wildcard tools/*.py)
	rm -rf $(WHEELHOUSE)
	@start=$$(date +%s); \
	$(PY) tools/pgo_build.py --python $(PY) --interpreter $(WHEEL_PYTHONS) --out $(WHEELHOUSE) \
		--target $(GNU_TARGET) --zig --compatibility manylinux2014; \
	gnu=$$(date +%s); \
	$(PY) tools/pgo_build.py --python $(PY) --interpreter $(WHEEL_PYTHONS) --out $(WHEELHOUSE) \
		--target $(MUSL_TARGET) --zig --compatibility musllinux_1_2; \
	musl=$$(date +%s); \
	$(VENV)/bin/maturin sdist --out $(WHEELHOUSE); \
	echo "make wheels: manylinux $$((gnu - start)) s, musllinux $$((musl - gnu)) s"
	@ls -l $(WHEELHOUSE)
	@touch $@

# Installs the wheels and the sdist into fresh venvs, with no Rust toolchain on PATH, and serves
# a request from each (tests/test_wheels.py; the sdist compiles everything: about as long as a
# clean `make install`).
test-wheels: test-deps wheels
	$(PY) -m pytest -q -m wheels tests/test_wheels.py

# ruff's version is pinned to a minor release: a newer one may add rules to the selected sets
# (pyproject.toml's [tool.ruff]) and fail a tree nobody changed.
$(STAMP)-lint-deps: $(STAMP)-venv Makefile
	$(PIP) install --quiet 'ruff>=0.17,<0.18'
	@touch $@

lint: $(STAMP)-lint-deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests bench tools

# The peers ferrocorn is measured against live in their own venv.
BENCH_VENV := .bench-venv
BENCH_ARGS ?=

$(BENCH_VENV)/.stamp: Makefile
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet gunicorn granian flask django matplotlib whitenoise brotli h2
	$(BENCH_VENV)/bin/pip install --quiet 'uvicorn[standard]' hypercorn fastapi
	@# py-spy: where an app's Python time goes on the ASGI loop thread (docs/benchmarks.md).
	$(BENCH_VENV)/bin/pip install --quiet py-spy
	@# bjoern needs libev's headers; it is left out (and the run says so) where it does not build.
	@if [ ! -e /usr/include/ev.h ] && command -v apt-get >/dev/null 2>&1; then \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libev-dev || true; \
	fi
	$(BENCH_VENV)/bin/pip install --quiet bjoern || echo "bjoern did not build: the run goes on without it"
	@# The WebSocket rows' peers: Uvicorn's websockets implementation (in [standard]), and
	@# flask-sock on simple-websocket under Gunicorn gthread.
	$(BENCH_VENV)/bin/pip install --quiet websockets flask-sock simple-websocket
	@touch $@

# The yardstick of the hello row: hyper alone, no Python (its own crate).
# Its own target directory: the wheel's release build has other RUSTFLAGS (the PGO profile).
HYPER_HELLO := target/hyper/release/hyper_hello
$(HYPER_HELLO): bench/hyper_hello/Cargo.toml bench/hyper_hello/Cargo.lock bench/hyper_hello/src/main.rs
	cargo build --release --quiet --manifest-path bench/hyper_hello/Cargo.toml --target-dir target/hyper

# The WebSocket rows' load generator (tokio-tungstenite; its own crate, its own target
# directory like hyper_hello's, so `make test` does not build it).
WS_LOAD := target/ws_load/release/ws_load
$(WS_LOAD): bench/ws_load/Cargo.toml bench/ws_load/Cargo.lock $(wildcard bench/ws_load/src/*.rs)
	cargo build --release --quiet --manifest-path bench/ws_load/Cargo.toml --target-dir target/ws_load

# The apps' own dependencies in ferrocorn's venv too (it imports them).
$(STAMP)-bench-deps: $(STAMP)-venv Makefile
	$(PIP) install --quiet django fastapi
	@touch $@

bench: install test-deps $(BENCH_VENV)/.stamp $(STAMP)-bench-deps $(HYPER_HELLO) $(WS_LOAD)
	$(BENCH_VENV)/bin/python bench/run.py $(BENCH_ARGS)

# docs/settings.md and the README's options table are generated from the settings' declaration; a test fails when it is stale.
docs: $(STAMP)-venv
	cargo test -q -p ferrocorn --lib -- --ignored --exact config::docs::tests::write_docs

clean:
	cargo clean
	rm -rf dist $(WHEELHOUSE) .pytest_cache $(STAMP)-install
	find python tests examples -name __pycache__ -type d -prune -exec rm -rf {} +
