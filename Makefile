# Self-explaining targets; every target but `setup` runs `setup` first (quick when done).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.py | sha1sum | cut -c1-12)
JARS := $(VENV)/share/ecom-pipeline/jars
DEMO_LANDING ?= ./landing
DEMO_LAKE ?= ./lakehouse
DEMO_START ?= 2026-03-01
DEMO_DAYS ?= 7
DEMO_SCALE ?= 0.02
SCALE ?= 1
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
KAFKA_PORT ?= 9092
CODE := pipeline_lib jobs ecom_generator tests tools bench airflow/dags setup.py
KAFKA_DIR ?= .kafka

.PHONY: help setup demo test test-fast check lint format notebooks bench airflow-setup kafka-up kafka-down clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

setup: $(STAMP) $(JARS)/.done $(JARS)/.jdbc-done $(JARS)/.kafka-done  ## create .venv, fetch the jars (Delta, PostgreSQL JDBC, Kafka), build tools/local_fs and the driver's class archive (idempotent)
	@$(BIN)/python tools/build_local_fs.py
	@$(BIN)/python tools/build_class_archive.py

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[local,dev]"
	rm -f $(VENV)/.installed-* && touch $@

$(JARS)/.done: $(STAMP) tools/fetch_delta_jars.py tools/delta-jars.pom.xml
	$(BIN)/python tools/fetch_delta_jars.py
	touch $@

$(JARS)/.jdbc-done: $(JARS)/.done tools/fetch_jdbc_jars.py tools/jdbc-jars.pom.xml
	$(BIN)/python tools/fetch_jdbc_jars.py
	touch $@

$(JARS)/.kafka-done: $(JARS)/.done tools/fetch_kafka_jars.py tools/kafka-jars.pom.xml
	$(BIN)/python tools/fetch_kafka_jars.py
	touch $@

demo: setup  ## generate a small data set, run every layer into ./lakehouse, summarize gold
	$(BIN)/ecom-pipeline generate --landing $(DEMO_LANDING) --start $(DEMO_START) --days $(DEMO_DAYS) --scale $(DEMO_SCALE) --seed 7
	$(BIN)/ecom-pipeline run --layer all --landing $(DEMO_LANDING) --lake $(DEMO_LAKE)
	$(BIN)/ecom-pipeline summary --lake $(DEMO_LAKE)

test: setup  ## run the whole test suite (slow tests included) in $(TEST_WORKERS) processes
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-fast: setup  ## run the tests not marked slow
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" $(PYTEST_ARGS)

check: setup  ## ruff check, format check and mypy (what CI runs before the tests)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/python -m mypy

lint: check  ## alias of check

format: setup  ## format the code with ruff
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

notebooks: setup  ## open Jupyter on notebooks/ with the demo lake (run `make demo` first)
	$(BIN)/python -c "import jupyterlab" 2>/dev/null || $(BIN)/python -m pip install -q jupyterlab
	ECOM_LAKE=$(abspath $(DEMO_LAKE)) $(BIN)/jupyter lab notebooks/

bench: setup  ## benchmark at SCALE (default 1): bench/results/<scale>/ (see bench/README.md; BENCH_ARGS=...)
	$(BIN)/python -c "import duckdb, deltalake" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -m bench.run --scale $(SCALE) $(BENCH_ARGS)

airflow-setup:  ## create .venv-airflow for the Airflow DAG (Airflow's pins clash with the project's; idempotent)
	bash airflow/setup-venv.sh

kafka-up: setup  ## start a local Kafka broker (KRaft, one node) on 127.0.0.1:$(KAFKA_PORT), data in $(KAFKA_DIR)
	$(BIN)/python tools/kafka_broker.py up --port $(KAFKA_PORT) --dir $(KAFKA_DIR)

kafka-down:  ## stop the broker started by kafka-up
	$(BIN)/python tools/kafka_broker.py down --dir $(KAFKA_DIR)

clean:  ## remove the demo landing zone and lake
	rm -rf $(DEMO_LANDING) $(DEMO_LAKE) spark-warehouse metastore_db derby.log
