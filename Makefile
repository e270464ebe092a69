# Every target makes its own virtual environment in .venv; nothing is installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test test-fast lint demo bench docs dist clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-test: setup.py pyproject.toml mq_transaction/_version.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-bench: setup.py pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# tests/test_smtp_client.py runs Debian's Postfix smtpd, a real server offering CHUNKING
# (tests/postfix_server.py; it needs root): the package is installed when it is missing.
POSTFIX_MASTER := /usr/lib/postfix/sbin/master

test: lint docs $(POSTFIX_MASTER)
	$(BIN)/python -m pytest

$(POSTFIX_MASTER):
	@echo "installing Debian's postfix package (a real smtpd for the CHUNKING test)"
	export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q postfix >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q postfix >/dev/null; }

# The quick loop while working: lint and every test not marked slow (`make test` runs them all).
test-fast: lint
	$(BIN)/python -m pytest -m "not slow"

# The documentation site; warnings are errors. Part of `make test`, hence of CI.
docs: $(VENV)/.installed-test
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html

demo: $(VENV)/.installed-test
	$(BIN)/python examples/demo.py

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/enqueue.py

# An sdist and a wheel in dist/, checked with twine (the steps tests/test_release.py runs too).
dist: $(VENV)/.installed-test
	rm -rf dist build
	$(BIN)/python -m build --sdist --wheel --outdir dist .
	$(BIN)/twine check --strict dist/*

clean:
	rm -rf $(VENV) build dist *.egg-info demo-run

# Drain 2,000 queued messages with mq-send, zope-sendmail and a bare smtplib client into
# Postfix's smtp-sink (fetched into /tmp/mq-bench-cache from Debian's postfix package).
.PHONY: bench-drain
bench-drain: $(VENV)/.installed-bench
	$(BIN)/python bench/drain.py

# send() of one message to 50,000 recipients, in three forms (a few seconds).
.PHONY: bench-recipients
bench-recipients: $(VENV)/.installed-bench
	$(BIN)/python bench/recipients.py

# The measured reasons for the hand-written parts (JSON writer, address fast path, inotify): about 3 min.
.PHONY: bench-hand-written
bench-hand-written: $(VENV)/.installed-bench
	$(BIN)/python bench/hand_written.py

# Commit-to-sent latency of mq-send --daemon and its idle CPU, against zope.sendmail (about 1.5 min).
.PHONY: bench-latency
bench-latency: $(VENV)/.installed-bench
	$(BIN)/python bench/latency.py

# Drain 200 messages (3 recipients each) through a proxy adding 10 ms each way in front of
# smtp-sink: mq-send with default settings against zope-sendmail and plain smtplib (about 3 min).
.PHONY: bench-network
bench-network: $(VENV)/.installed-bench
	$(BIN)/python bench/network.py

# One SMTP session through a 20 ms round trip: no pipelining, DATA pipelined, BDAT (Postfix smtpd; root).
.PHONY: bench-round-trips
bench-round-trips: $(VENV)/.installed-bench
	$(BIN)/python bench/round_trips.py

# mq-queue list and status on a queue of 100,000 messages (a few minutes, most of it filling the queue).
.PHONY: bench-queue-scale
bench-queue-scale: $(VENV)/.installed-bench
	$(BIN)/python bench/queue_scale.py

# mq-send --daemon beside 100,000 deferred messages: commit-to-delivery of new mail (a few minutes).
.PHONY: bench-daemon-scale
bench-daemon-scale: $(VENV)/.installed-bench
	$(BIN)/python bench/daemon_scale.py

# The database queue: what send() adds to a request (same-transaction mode), and drains of
# 1, 2 and 4 mq-send on one PostgreSQL queue against one directory sender (private servers),
# into a sink on loopback and into one 20 ms (round trip) away.
.PHONY: bench-pg
bench-pg: $(VENV)/.installed-bench
	$(BIN)/python bench/pg_enqueue.py
	$(BIN)/python bench/pg_drain.py
	$(BIN)/python bench/pg_drain.py --count 1000 --delay 0.01
