# The two commands of the README. Each one sets up what it needs first (scripts/setup.sh is idempotent).
.PHONY: start test test-slow lint

start:
	@scripts/setup.sh
	.venv/bin/atelier serve --data-dir atelier-data

test:
	@scripts/setup.sh test
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q

# Full-size parity checks and other long runs, run on purpose.
test-slow:
	@scripts/setup.sh test
	.venv/bin/python -m pytest -q -m slow

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
