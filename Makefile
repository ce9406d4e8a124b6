# The README's two commands are `make demo` and `make test`; both run setup first, which is a
# fast no-op once everything is installed. `make test` runs the linters first (seconds).
.PHONY: setup demo lint test test-slow test-all package readme-table

setup:
	bash setup/setup.sh

demo: setup
	.venv/bin/pinpipe demo

# ruff (lint + format check) and the import-linter layer contracts in pyproject.toml
lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

test: lint
	.venv/bin/python -m pytest

# Minutes-long tests: the standalone-cluster spark-submit test, real data at full size.
test-slow: setup
	.venv/bin/python -m pytest -m slow

test-all: lint
	.venv/bin/python -m pytest -m ""

package: setup
	.venv/bin/pinpipe package

# The README's measured table, regenerated from the benchmark records in reports/*.json
readme-table: setup
	.venv/bin/python bench/readme_table.py
