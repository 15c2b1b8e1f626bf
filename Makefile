# BigDataFlow — every entry point of the toolkit. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/bigdataflow.example.toml
PYTEST_ARGS ?=
INVENTORY ?= inventory/vagrant
ANSIBLE_ARGS ?=
PLAYBOOK := $(BIN)/ansible-playbook -i $(INVENTORY) $(ANSIBLE_ARGS)
# Groups of deps/debian-12.txt that `make deps` installs.
DEPS ?= test deploy lab
# The local lab of lab-up, lab-down, demo, e2e, faults and bench: inventory/lab (three
# machines) or inventory/lab-cluster (six). Exported: lab/lab.sh and the lab tests read it.
LAB_INVENTORY ?= inventory/lab
export LAB_INVENTORY
# Its deployment's generated secrets: .secrets/<the inventory folder's name> (roles/bdf_secrets).
LAB_DEPLOYMENT := $(notdir $(patsubst %/,%,$(LAB_INVENTORY)))
LAB_SECRETS := .secrets/$(LAB_DEPLOYMENT)

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[1m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

STAMP := $(VENV)/.installed
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

.PHONY: install
install: $(STAMP) ## Create .venv with the pinned Python dependencies (pyspark, confluent-kafka, ...)

.PHONY: deps
deps: ## Debian 12, root: apt-get the DEPS groups of deps/debian-12.txt (default test deploy lab), then .venv
	DEPS="$(DEPS)" lab/lab.sh deps

.PHONY: lint
lint: install ## ruff (lint, format check) and ansible-lint (production profile)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ansible-lint --offline -q

.PHONY: format
format: install ## ruff: fix what can be fixed and format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: jvm
jvm: install ## Build the stream job's JVM jar (the input contract validator, javac) into .artifacts/jvm/
	$(BIN)/python jvm/build.py --output .artifacts/jvm/bigdataflow-jvm.jar

.PHONY: test
test: install ## Run the test suite (unit tests with a local SparkSession; no servers needed)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: test-fresh
test-fresh: ## Stock Debian 12 container (root): only the README's Requirements, then make test, deps, artifacts
	.ci/fresh

.PHONY: validate-vagrant
validate-vagrant: ## vagrant validate the Vagrantfile with the libvirt provider (make deps DEPS=vagrant)
	@command -v vagrant >/dev/null || { echo "vagrant is not installed: make deps DEPS=vagrant" >&2; exit 2; }
	VAGRANT_DEFAULT_PROVIDER=libvirt vagrant validate

# The tests/integration files that start their own servers on 127.0.0.1: make test-servers
# runs them, make e2e (the lab's tests) leaves them out.
SERVER_TESTS := $(addprefix tests/integration/,test_acl_kafka.py test_dlq_kafka.py test_tls_kafka.py \
  test_tls_ferretdb.py test_tls_dashboard.py test_tls_cassandra.py)

.PHONY: test-servers
test-servers: artifacts ## Tests against real servers on 127.0.0.1: dashboard in headless Chromium (FerretDB), ACLs, bdf-dlq, TLS (Kafka, FerretDB, Cassandra)
	$(BIN)/pytest tests/browser $(SERVER_TESTS) $(PYTEST_ARGS)

.PHONY: e2e
e2e: install ## End to end on a fresh LAB_INVENTORY lab (root): deploy twice (idempotence), then the lab tests
	@test -n "$(LAB_DEPLOYMENT)" || { echo "LAB_INVENTORY names no inventory folder" >&2; exit 2; }
	lab/lab.sh deps
	lab/lab.sh down
	rm -rf $(LAB_SECRETS)
	lab/lab.sh up
	$(MAKE) deploy INVENTORY=$(LAB_INVENTORY)
	set -o pipefail; $(MAKE) deploy INVENTORY=$(LAB_INVENTORY) ANSIBLE_ARGS="$(ANSIBLE_ARGS)" | tee .lab-second-deploy.log
	@! grep -E 'changed=[1-9]' .lab-second-deploy.log || { echo "second deploy changed something: not idempotent" >&2; exit 1; }
	LAB=1 $(BIN)/pytest tests/integration $(addprefix --ignore=,$(SERVER_TESTS)) $(PYTEST_ARGS)

.PHONY: faults
faults: install ## On the deployed LAB_INVENTORY lab: kill the job/broker, stop Cassandra/FerretDB, cut a Cassandra host's power, under load; nothing lost (LAB=1)
	LAB=1 $(BIN)/pytest tests/faults -s $(PYTEST_ARGS)

.PHONY: bench
bench: install ## Benchmark the pipeline deployed on the LAB_INVENTORY lab (tests/bench/results/ gets the JSON)
	$(BIN)/python -m tests.bench.bench $(BENCH_ARGS)

.PHONY: keys
keys: install ## Create a key file: make keys KEY_FILE=path (mode 0600)
	@test -n "$(KEY_FILE)" || { echo "usage: make keys KEY_FILE=path" >&2; exit 2; }
	$(BIN)/bdf-keys create $(KEY_FILE)

.PHONY: offline-source
offline-source: install ## Serve the offline randomuser.me API on 127.0.0.1:8080
	$(BIN)/bdf-randomuser --host 127.0.0.1 --port 8080

.PHONY: produce
produce: install ## Publish COUNT profiles with CONFIG (default config/bigdataflow.example.toml)
	$(BIN)/bdf-producer --config $(CONFIG) --count $${COUNT:-1000}

.PHONY: artifacts
artifacts: install ## Fetch/assemble every pinned artifact once into .artifacts/ (checksums in manifest.json)
	$(BIN)/ansible-playbook playbooks/artifacts.yml $(ANSIBLE_ARGS)

.PHONY: deploy
deploy: artifacts ## Deploy the whole pipeline onto INVENTORY (default inventory/vagrant)
	$(PLAYBOOK) playbooks/site.yml

.PHONY: fetch-secrets
fetch-secrets: install ## Copy the secrets the hosts of INVENTORY keep (key file, passwords) into .secrets/<deployment>/
	$(PLAYBOOK) playbooks/fetch_secrets.yml

.PHONY: status
status: install ## Every service on every host of INVENTORY, and the pipeline's health
	$(PLAYBOOK) playbooks/status.yml

.PHONY: rotate-certs
rotate-certs: install ## New host certificates on INVENTORY, one host at a time, restarting the services using them
	$(PLAYBOOK) playbooks/rotate_certs.yml

.PHONY: restart
restart: install ## Restart GROUP's service on INVENTORY, one host at a time, each gated on its health (make restart GROUP=kafka)
	$(PLAYBOOK) playbooks/restart.yml -e restart_group=$(GROUP)

.PHONY: finish-kafka-upgrade
finish-kafka-upgrade: install ## After `make deploy` with a new Kafka version on every node: raise the cluster's feature levels to it
	$(PLAYBOOK) playbooks/finish_kafka_upgrade.yml

.PHONY: lab-up
lab-up: ## Start the LAB_INVENTORY lab (default inventory/lab, bridge bdf0): Debian 12 systemd-nspawn machines (root)
	lab/lab.sh up

.PHONY: lab-down
lab-down: ## Stop the LAB_INVENTORY lab and remove its bridge and NAT table
	lab/lab.sh down

.PHONY: demo
demo: ## On a fresh Linux machine (root): make deps, lab-up, artifacts, deploy onto LAB_INVENTORY, then print the URLs
	lab/lab.sh deps
	lab/lab.sh up
	$(MAKE) deploy INVENTORY=$(LAB_INVENTORY)
	@eval "$$($(BIN)/python lab/topology.py shell)"; \
	  dashboard=$$($(BIN)/python lab/topology.py group dashboard | head -n 1); \
	  master=$$($(BIN)/python lab/topology.py group spark_master | head -n 1); \
	  if grep -Eq '^bdf_tls_enabled: *(false|no)' $(LAB_INVENTORY)/group_vars/all.yml; then \
	    echo "Dashboard:       http://$$dashboard:8050"; \
	  else echo "Dashboard:       https://$$dashboard:8050 (trust the CA $(LAB_SECRETS)/tls/ca.crt)"; fi; \
	  echo "Spark master UI: http://127.0.0.1:8080 after" \
	    "ssh -i $$LAB_STATE_DIR/ssh/id_ed25519 -L 8080:$$master:8080 root@$$master"

.PHONY: screenshot
screenshot: install ## Regenerate docs/dashboard.png (local FerretDB, synthetic aggregates, headless Chromium)
	$(BIN)/python -m dashboard.screenshot --output docs/dashboard.png

.PHONY: register
register: install ## Render the GDPR register (gdpr/register.yaml) to docs/gdpr/register.{md,html}
	$(BIN)/bdf-gdpr register render --format md --output docs/gdpr/register.md
	$(BIN)/bdf-gdpr register render --format html --output docs/gdpr/register.html

.PHONY: clean
clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
