# The two commands of the README. Each one sets up what it needs first (scripts/setup.sh is idempotent).
.PHONY: start test test-slow lint

# CLASSROOM=1 make start: one server for the whole class (classroom mode: a join link for the learners).
start:
	@scripts/setup.sh
	.venv/bin/atelier serve --data-dir atelier-data $(if $(CLASSROOM),--classroom)

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
