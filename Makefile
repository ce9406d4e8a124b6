# The README's two commands are `make demo` and `make test`; both run setup first, which is a
# fast no-op once everything is installed.
.PHONY: setup demo test test-slow test-all package

setup:
	bash setup/setup.sh

demo: setup
	.venv/bin/pinpipe demo

test: setup
	.venv/bin/python -m pytest

# Minutes-long tests: the standalone-cluster spark-submit test.
test-slow: setup
	.venv/bin/python -m pytest -m slow

test-all: setup
	.venv/bin/python -m pytest -m ""

package: setup
	.venv/bin/pinpipe package
