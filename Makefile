# The two quick-start commands: `make demo` and `make test`. Both make their own
# virtual environment in .venv from pyproject.toml (Python 3.11+ is all they need).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench test-programs clean

demo: $(STAMP)
	$(BIN)/mailer demo

test: $(STAMP) test-programs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/render.py

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The real programs the tests drive, installed from Debian when missing (and we may use
# apt): Chromium for the pages (fonts-noto-cjk draws Chinese), Dovecot for the bounce
# mailbox, SpamAssassin for the spam scores.
test-programs:
	@{ command -v chromium && test -x /usr/sbin/dovecot && command -v spamassassin; } >/dev/null || { \
	  echo "Installing Debian's chromium, dovecot-imapd and spamassassin for the tests"; \
	  apt-get update -qq && apt-get install -y -qq chromium fonts-noto-cjk dovecot-imapd spamassassin >/dev/null; }

clean:
	rm -rf $(VENV) preview outbox build .pytest_cache
