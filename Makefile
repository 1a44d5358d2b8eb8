# The two quick-start commands: `make demo` and `make test`. Both make their own
# virtual environment in .venv from pyproject.toml (Python 3.11+ is all they need).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench browser clean

demo: $(STAMP)
	$(BIN)/mailer demo

test: $(STAMP) browser
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

# The browser tests drive Debian's Chromium (no browser download); fonts-noto-cjk
# lets it draw Chinese. Installed here when missing and we may use apt.
browser:
	@{ command -v chromium && test -x /usr/sbin/dovecot && command -v spamassassin; } >/dev/null || { \
	  echo "Installing Debian's chromium for the browser tests, dovecot-imapd for the bounce mailbox's, spamassassin for the spam scores'"; \
	  apt-get update -qq && apt-get install -y -qq chromium fonts-noto-cjk dovecot-imapd spamassassin >/dev/null; }

clean:
	rm -rf $(VENV) preview outbox build .pytest_cache
