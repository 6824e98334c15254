# hikyaku: targets named by intent. `make help` lists them.

# Build output lives outside the clone so that every clone, branch and CI job reuses it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/hikyaku/target

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

CARGO ?= cargo
PYTHON ?= python3
NPM ?= npm

# ---------------------------------------------------------------------------------------------
# Pinned tools, installed into the git-ignored .tools/ folder
# ---------------------------------------------------------------------------------------------
TOOLS_DIR := .tools
VENV := $(TOOLS_DIR)/venv
NODE_DIR := $(TOOLS_DIR)/node
MOTO_VERSION := 5.2.5
CARGO_LAMBDA_VERSION := 1.9.2
ZIGLANG_VERSION := 0.14.1
# The template linters live in a venv of their own: checkov pins boto3 and friends, which must
# not move moto's.
INFRA_VENV := $(TOOLS_DIR)/infra-venv
CFN_LINT_VERSION := 1.58.0
CHECKOV_VERSION := 3.3.30
# The SES v2 emulator version is pinned, with its whole dependency tree, in this lock file.
SES_LOCAL_LOCK := scripts/ses-local/package-lock.json

VENV_STAMP := $(VENV)/.installed-moto-$(MOTO_VERSION)-cargo-lambda-$(CARGO_LAMBDA_VERSION)-zig-$(ZIGLANG_VERSION)
NODE_STAMP := $(NODE_DIR)/.installed-$(shell sha256sum $(SES_LOCAL_LOCK) 2>/dev/null | cut -c1-16)
CARGO_LAMBDA := $(VENV)/bin/cargo-lambda
INFRA_STAMP := $(INFRA_VENV)/.installed-cfn-lint-$(CFN_LINT_VERSION)-checkov-$(CHECKOV_VERSION)
CFN_LINT := $(INFRA_VENV)/bin/cfn-lint
CHECKOV := $(INFRA_VENV)/bin/checkov

.PHONY: tools
tools: $(VENV_STAMP) $(NODE_STAMP) $(INFRA_STAMP) ## Install the pinned local tools into .tools/ (fast when present)

$(VENV_STAMP):
	@echo "==> installing moto $(MOTO_VERSION), cargo-lambda $(CARGO_LAMBDA_VERSION), ziglang $(ZIGLANG_VERSION) into $(VENV)"
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check \
		'moto[server]==$(MOTO_VERSION)' \
		'cargo-lambda==$(CARGO_LAMBDA_VERSION)' \
		'ziglang==$(ZIGLANG_VERSION)'
	touch $@

$(INFRA_STAMP):
	@echo "==> installing cfn-lint $(CFN_LINT_VERSION), checkov $(CHECKOV_VERSION) into $(INFRA_VENV)"
	rm -rf $(INFRA_VENV)
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/pip install --quiet --disable-pip-version-check \
		'cfn-lint==$(CFN_LINT_VERSION)' \
		'checkov==$(CHECKOV_VERSION)'
	touch $@

$(NODE_STAMP): $(SES_LOCAL_LOCK) scripts/ses-local/package.json
	@echo "==> installing aws-ses-v2-local (pinned by $(SES_LOCAL_LOCK)) into $(NODE_DIR)"
	rm -rf $(NODE_DIR)
	mkdir -p $(NODE_DIR)
	cp scripts/ses-local/package.json $(SES_LOCAL_LOCK) $(NODE_DIR)/
	$(NPM) ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: tools-clean
tools-clean: ## Remove .tools/ (the next `make tools` reinstalls)
	rm -rf $(TOOLS_DIR)

# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------
LAMBDA_PACKAGES := hikyaku-fanout hikyaku-sender hikyaku-feedback
LAMBDA_ARCH_TARGET := aarch64-unknown-linux-gnu
# Deployable bootstraps stay in the clone (git-ignored) where infra/ finds them, although the
# build itself uses CARGO_TARGET_DIR.
LAMBDA_DIR ?= target/lambda

CHECK_LAMBDA_TARGET := if ! rustup target list --installed 2>/dev/null | grep -qx '$(LAMBDA_ARCH_TARGET)'; then \
		echo "error: the Rust target $(LAMBDA_ARCH_TARGET) is not installed;" \
		     "run: rustup target add $(LAMBDA_ARCH_TARGET)" >&2; \
		exit 1; \
	fi

.PHONY: build
build: $(VENV_STAMP) ## Release Lambda binaries for arm64 (target/lambda/<fn>/bootstrap)
	@$(CHECK_LAMBDA_TARGET)
	@# The venv on PATH lets cargo-zigbuild find the pinned Zig (python3 -m ziglang).
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(CARGO_LAMBDA) lambda build --release --arm64 \
		--lambda-dir $(LAMBDA_DIR) $(addprefix --package ,$(LAMBDA_PACKAGES))

# ---------------------------------------------------------------------------------------------
# Local stack: moto, the SES v2 emulator, the SES proxy (faults, mailbox simulator events),
# cargo lambda watch, the Lambda proxy, the SNS pump (feedback topic -> hikyaku-feedback), the
# scheduler (due schedules -> hikyaku-fanout) and the SQS pump (send queue -> hikyaku-sender).
# Everything binds to loopback; pid files and logs live in the git-ignored .local/.
# ---------------------------------------------------------------------------------------------
LOCAL_DIR := .local
LOCAL_HOST ?= 127.0.0.1
MOTO_PORT ?= 5000
SES_PORT ?= 8005
SES_PROXY_PORT ?= 8006
LAMBDA_PORT ?= 9000
LAMBDA_PROXY_PORT ?= 9001
SNS_PUMP_PORT ?= 8007
# Seconds each service may take to answer its health check.
STARTUP_TIMEOUT ?= 120
# PUMP=0 brings the stack up without the SQS -> sender pump (integration tests run their own).
PUMP ?= 1
PUMP_FUNCTION ?= hikyaku-sender
PUMP_ARGS ?=
# The SNS pump always runs (also with PUMP=0): SES events reach the feedback function only
# through it.
SNS_PUMP_FUNCTION ?= hikyaku-feedback
SNS_PUMP_ARGS ?=
SES_PROXY_ARGS ?=
SCHEDULER_ARGS ?=
LAMBDA_PROXY_ARGS ?=
# Instances per function under cargo lambda watch (the pump's 2 batches, twice with
# --duplicate-delivery, plus a fan-out invoking itself).
LAMBDA_CONCURRENCY ?= 4
# WATCH_RELOAD=0: keep the functions as built; by default cargo lambda watch rebuilds and
# restarts them when a source file changes (an invocation in flight then never answers).
WATCH_RELOAD ?= 1
LAMBDA_WATCH_ARGS ?=
SETUP_ARGS ?=
# Built before anything starts, so `cargo lambda watch` finds the functions compiled.
LOCAL_BUILD_PACKAGES ?= hikyaku-local $(LAMBDA_PACKAGES)
STACK_ENV := $(LOCAL_DIR)/stack.env

MOTO_URL := http://$(LOCAL_HOST):$(MOTO_PORT)
SES_URL := http://$(LOCAL_HOST):$(SES_PORT)
SES_PROXY_URL := http://$(LOCAL_HOST):$(SES_PROXY_PORT)
LAMBDA_URL := http://$(LOCAL_HOST):$(LAMBDA_PORT)
LAMBDA_PROXY_URL := http://$(LOCAL_HOST):$(LAMBDA_PROXY_PORT)
SNS_PUMP_URL := http://$(LOCAL_HOST):$(SNS_PUMP_PORT)

HIKYAKU_LOCAL := $(CARGO_TARGET_DIR)/debug/hikyaku-local
STACK := scripts/local-stack.sh
# The emulators accept any credentials; these keep the SDK from looking for real ones.
LOCAL_AWS_ENV := AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
	AWS_ENDPOINT_URL=$(MOTO_URL)

export HIKYAKU_LOCAL_DIR := $(CURDIR)/$(LOCAL_DIR)

.PHONY: local-up
local-up: local-sns-pump local-scheduler $(if $(filter 1,$(PUMP)),local-pump) ## Start the local stack (PUMP=0: without the SQS pump)
	@echo "==> local stack is up; environment in $(STACK_ENV), logs in $(LOCAL_DIR)/logs/"
	@echo "    SES inbox $(SES_URL)/  SES proxy $(SES_PROXY_URL)  Lambda $(LAMBDA_PROXY_URL) (watch $(LAMBDA_URL))"

.PHONY: local-down
local-down: ## Stop everything local-up started
	@$(STACK) stop-all

.PHONY: local-status
local-status: ## Show which local services are running
	@$(STACK) status

.PHONY: local-build
local-build: ## Debug build of the Lambda functions and hikyaku-local
	$(CARGO) build $(addprefix -p ,$(LOCAL_BUILD_PACKAGES))

.PHONY: local-moto
local-moto: $(VENV_STAMP)
	@$(STACK) ensure-free moto $(MOTO_URL)/moto-api/
	@# moto_server with DynamoDB's item operations made atomic (see the script).
	@$(STACK) start moto -- $(VENV)/bin/python scripts/moto-server.py -H $(LOCAL_HOST) -p $(MOTO_PORT)
	@$(STACK) wait-http moto $(MOTO_URL)/moto-api/ $(STARTUP_TIMEOUT)

.PHONY: local-ses
local-ses: $(NODE_STAMP)
	@$(STACK) ensure-free ses $(SES_URL)/health-check
	@$(STACK) start ses -- node $(NODE_DIR)/node_modules/aws-ses-v2-local/dist/cli.js \
		--host $(LOCAL_HOST) --port $(SES_PORT)
	@$(STACK) wait-http ses $(SES_URL)/health-check $(STARTUP_TIMEOUT)

# Setup only writes the proxies' URLs into the env file and subscribes the SNS pump's URL to the
# feedback topic; it needs moto, not the proxies. It runs first because the SES proxy publishes
# to the topic it creates.
.PHONY: local-setup
local-setup: local-build local-moto ## Create tables, queues and topic on moto; write .local/stack.env
	@$(LOCAL_AWS_ENV) $(HIKYAKU_LOCAL) setup --env-file $(STACK_ENV) \
		--sesv2-endpoint $(SES_PROXY_URL) --lambda-endpoint $(LAMBDA_PROXY_URL) \
		--feedback-endpoint $(SNS_PUMP_URL)/ $(SETUP_ARGS)

# The stack env gives the proxy moto's endpoint and HIKYAKU_FEEDBACK_TOPIC_ARN, which turns on
# the mailbox simulator's SES events.
.PHONY: local-ses-proxy
local-ses-proxy: local-ses local-setup
	@$(STACK) ensure-free ses-proxy $(SES_PROXY_URL)/_hikyaku/health
	@$(STACK) start-with-env ses-proxy $(STACK_ENV) -- $(HIKYAKU_LOCAL) ses-proxy \
		--listen $(LOCAL_HOST):$(SES_PROXY_PORT) --upstream $(SES_URL) $(SES_PROXY_ARGS)
	@$(STACK) wait-http ses-proxy $(SES_PROXY_URL)/_hikyaku/health $(STARTUP_TIMEOUT)

.PHONY: local-watch
local-watch: local-ses-proxy $(VENV_STAMP)
	@$(STACK) ensure-free lambda-watch $(LAMBDA_URL)/
	@$(STACK) start lambda-watch -- $(CARGO_LAMBDA) lambda watch \
		--invoke-address $(LOCAL_HOST) --invoke-port $(LAMBDA_PORT) \
		--concurrency $(LAMBDA_CONCURRENCY) --env-file $(STACK_ENV) \
		$(if $(filter 0,$(WATCH_RELOAD)),--ignore-changes) $(LAMBDA_WATCH_ARGS)
	@$(STACK) wait-http lambda-watch $(LAMBDA_URL)/ $(STARTUP_TIMEOUT)

# AWS's Invoke semantics over cargo lambda watch: Event invocations answer 202 and run in the
# background; function errors come back as X-Amz-Function-Error.
.PHONY: local-lambda-proxy
local-lambda-proxy: local-watch
	@$(STACK) ensure-free lambda-proxy $(LAMBDA_PROXY_URL)/_hikyaku/health
	@$(STACK) start lambda-proxy -- $(HIKYAKU_LOCAL) lambda-proxy \
		--listen $(LOCAL_HOST):$(LAMBDA_PROXY_PORT) --upstream $(LAMBDA_URL) $(LAMBDA_PROXY_ARGS)
	@$(STACK) wait-http lambda-proxy $(LAMBDA_PROXY_URL)/_hikyaku/health $(STARTUP_TIMEOUT)

# SNS's delivery of the feedback topic to its function: the http endpoint setup subscribed.
.PHONY: local-sns-pump
local-sns-pump: local-lambda-proxy ## Start the SNS -> feedback pump (SES events to hikyaku-feedback)
	@$(STACK) ensure-free sns-pump $(SNS_PUMP_URL)/_hikyaku/health
	@$(STACK) start-with-env sns-pump $(STACK_ENV) -- $(HIKYAKU_LOCAL) sns-pump \
		--listen $(LOCAL_HOST):$(SNS_PUMP_PORT) --function $(SNS_PUMP_FUNCTION) $(SNS_PUMP_ARGS)
	@$(STACK) wait-http sns-pump $(SNS_PUMP_URL)/_hikyaku/health $(STARTUP_TIMEOUT)

# EventBridge Scheduler's firing of due schedules: the schedule group on moto, fired at the
# fan-out through the Lambda proxy. Always runs (also with PUMP=0).
.PHONY: local-scheduler
local-scheduler: local-lambda-proxy ## Start the scheduler (due schedules of the group -> hikyaku-fanout)
	@$(STACK) start-with-env scheduler $(STACK_ENV) -- $(HIKYAKU_LOCAL) scheduler $(SCHEDULER_ARGS)
	@$(STACK) wait-alive scheduler 2

.PHONY: local-pump
local-pump: local-lambda-proxy ## Start the SQS -> sender pump (the event source mapping)
	@$(STACK) start-with-env pump $(STACK_ENV) -- $(HIKYAKU_LOCAL) pump \
		--function $(PUMP_FUNCTION) $(PUMP_ARGS)
	@$(STACK) wait-alive pump 2

# ---------------------------------------------------------------------------------------------
# The two commands, and the checks
# ---------------------------------------------------------------------------------------------
HIKYAKU := $(CARGO_TARGET_DIR)/debug/hikyaku

.PHONY: demo
demo: ## Run a real campaign end to end on the local stack, print its report, keep the inbox up
	@$(MAKE) local-down
	@$(MAKE) local-up LOCAL_BUILD_PACKAGES="$(LOCAL_BUILD_PACKAGES) hikyaku-cli" WATCH_RELOAD=0
	@HIKYAKU=$(HIKYAKU) STACK_ENV=$(STACK_ENV) SES_URL=$(SES_URL) scripts/demo.sh

.PHONY: test
test: test-unit test-integration ## Unit tests, then integration tests on a local stack this target starts and stops

.PHONY: test-unit
test-unit: ## Unit and handler tests (no emulator needed)
	$(CARGO) test --workspace --exclude hikyaku-tests

# The stack is stopped whatever the tests' outcome; the tests share one send queue, so they
# run one at a time. Small fan-out pages, and a reserve as long as watch's timeout, make every
# fan-out hand over after each page: every run exercises the continuation chain.
# A fresh SES account snapshot every second and a recheck of runs waiting for quota every 3 s
# let the quota tests watch a run wait and resume within seconds; jobs of a paused run looking
# again every 2 s let the lifecycle tests resume within seconds.
TEST_FUNCTION_ENV := --function-env HIKYAKU_FANOUT_PAGE_SIZE=200 --function-env HIKYAKU_FANOUT_RESERVE_SECS=600 \
	--function-env HIKYAKU_ACCOUNT_CACHE_SECS=1 --function-env HIKYAKU_QUOTA_RECHECK_SECS=3 \
	--function-env HIKYAKU_PAUSED_RECHECK_SECS=2
.PHONY: test-integration
test-integration: tools chromium ## Integration tests against the local stack (started and stopped here)
	@$(MAKE) local-down
	@status=0; \
	$(MAKE) local-up PUMP=0 WATCH_RELOAD=0 SETUP_ARGS="$(TEST_FUNCTION_ENV)" \
		LOCAL_BUILD_PACKAGES="$(LOCAL_BUILD_PACKAGES) hikyaku-cli" || status=$$?; \
	if [ $$status -eq 0 ]; then \
		HIKYAKU_SES_STORE_URL=$(SES_URL) HIKYAKU_SNS_PUMP_URL=$(SNS_PUMP_URL) LAMBDA_PORT=$(LAMBDA_PORT) \
		HIKYAKU_CLI=$(HIKYAKU) HIKYAKU_CHROMIUM=$(CHROMIUM) \
			$(CARGO) test -p hikyaku-tests -- --test-threads=1 || status=$$?; \
	fi; \
	if [ $$status -eq 0 ]; then \
		$(CARGO) test -p hikyaku-local --test local_stack -- --ignored --test-threads=1 || status=$$?; \
	fi; \
	if [ $$status -ne 0 ]; then $(STACK) tail-logs || true; fi; \
	$(MAKE) local-down; \
	exit $$status

# Headless Chromium draws the HTML report's charts in the integration tests (tests/tests/
# html_report.rs and the local stack's report test). Debian's package, installed only when
# $(CHROMIUM) is missing: as root (CI runs as root), else through sudo.
CHROMIUM ?= /usr/bin/chromium
.PHONY: chromium
chromium: ## Install Chromium (apt-get install chromium) for the HTML report tests, if missing
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "error: $(CHROMIUM) is missing and there is no apt-get to install it;" \
		     "install Chromium and run again with CHROMIUM=/path/to/chromium" >&2; \
		exit 1; \
	fi; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=; \
	elif command -v sudo >/dev/null 2>&1; then sudo=sudo; \
	else \
		echo "error: installing chromium needs root; run as root or install sudo" >&2; \
		exit 1; \
	fi; \
	echo "==> installing chromium (apt-get install -y chromium)"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || \
		{ $$sudo apt-get update && \
		  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

# The benchmark's stack: an account of 100 emails/s, no headroom (the budget is the whole
# rate), no SES events (the send path alone). Built with the dev profile, like the functions
# under cargo lambda watch, so it reuses the test build.
BENCH_FUNCTION_ENV := --function-env HIKYAKU_BUDGET_HEADROOM_PERCENT=0
.PHONY: bench
bench: tools ## Benchmarks: the canary's cost (in memory), then the send rate against the budget on a local stack this target starts and stops
	$(CARGO) bench --profile dev -p hikyaku-tests --bench canary
	@$(MAKE) local-down
	@status=0; \
	$(MAKE) local-up PUMP=0 WATCH_RELOAD=0 SETUP_ARGS="$(BENCH_FUNCTION_ENV)" \
		SES_PROXY_ARGS="--max-send-rate 100 --no-events" || status=$$?; \
	if [ $$status -eq 0 ]; then \
		$(CARGO) bench --profile dev -p hikyaku-tests --bench rate || status=$$?; \
	fi; \
	if [ $$status -ne 0 ]; then $(STACK) tail-logs || true; fi; \
	$(MAKE) local-down; \
	exit $$status

.PHONY: lint
lint: lint-infra ## rustfmt check, clippy with warnings as errors, and the templates' linters
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

INFRA_TEMPLATES := infra/template.yaml infra/sending-role.yaml
# Each skipped checkov check carries its reason in the resource's Metadata. --skip-download keeps
# checkov offline (it would fetch guidelines from its vendor's platform otherwise).
.PHONY: lint-infra
lint-infra: $(INFRA_STAMP) ## cfn-lint and checkov on the CloudFormation templates in infra/
	$(CFN_LINT) $(INFRA_TEMPLATES)
	$(CHECKOV) --quiet --compact --skip-download --framework cloudformation \
		$(addprefix --file ,$(INFRA_TEMPLATES))

# ---------------------------------------------------------------------------------------------
# Deploying to AWS (the README's "Deploying to AWS"): SAM for the stack, cargo lambda for a quick
# code change of one function. Neither is part of CI.
# ---------------------------------------------------------------------------------------------
SAM ?= sam
SAMCONFIG := infra/samconfig.toml
# The stack's name: the one `sam deploy --guided` saved, else hikyaku (the CLI's default
# fan-out function is hikyaku-fanout, the function name this stack name gives).
STACK_NAME ?= $(or $(shell sed -n 's/^stack_name *= *"\(.*\)"/\1/p' $(SAMCONFIG) 2>/dev/null | head -n 1),hikyaku)
DEPLOY_FUNCTIONS := fanout sender feedback
FUNCTION ?=

# The build is `sam build`'s (BuildMethod rust-cargolambda): it runs the venv's cargo-lambda
# (`cargo lambda build --release --arm64`, one binary at a time, into infra/.aws-sam/) with the
# pinned Zig on PATH. `make build` is not run first: building the three packages together
# unifies their dependencies' features differently, so SAM's per-binary builds would compile
# everything a second time. CARGO_TARGET_DIR is unset for it, so that the binaries land where
# SAM's builder looks for them by default (target/lambda/<bin>/ of the workspace, git-ignored).
.PHONY: deploy
deploy: ## Build for arm64 and deploy the stack with SAM (guided until infra/samconfig.toml exists)
	@if ! command -v $(SAM) >/dev/null 2>&1; then \
		echo "error: the AWS SAM CLI ('$(SAM)') is not installed or not on PATH; install it" \
		     "(see the README, \"Deploying to AWS\") and run make deploy again" >&2; \
		exit 1; \
	fi
	@$(CHECK_LAMBDA_TARGET)
	@$(MAKE) -s $(VENV_STAMP)
	cd infra && env -u CARGO_TARGET_DIR PATH="$(CURDIR)/$(VENV)/bin:$$PATH" \
		SAM_CLI_BETA_RUST_CARGO_LAMBDA=1 $(SAM) build --template-file template.yaml
	@if [ -f $(SAMCONFIG) ]; then \
		echo "==> sam deploy (settings from $(SAMCONFIG))"; \
		cd infra && $(SAM) deploy; \
	else \
		echo "==> first deploy: sam deploy --guided asks for the stack name, Region and parameters" \
		     "and saves them to $(SAMCONFIG)"; \
		cd infra && $(SAM) deploy --guided --capabilities CAPABILITY_IAM; \
	fi

# Replaces one deployed function's code (a new version), keeping its configuration and
# environment; the stack stays the source of truth and the next `make deploy` redeploys it.
.PHONY: deploy-code
deploy-code: $(VENV_STAMP) ## Upload one function's new code: make deploy-code FUNCTION=fanout|sender|feedback [STACK_NAME=...]
	@if [ -z "$(filter $(DEPLOY_FUNCTIONS),$(FUNCTION))" ] || [ "$(words $(FUNCTION))" != 1 ]; then \
		echo "error: say which function: make deploy-code FUNCTION=fanout, sender or feedback" >&2; \
		exit 1; \
	fi
	@$(MAKE) build LAMBDA_PACKAGES=hikyaku-$(FUNCTION)
	$(CARGO_LAMBDA) lambda deploy --lambda-dir $(LAMBDA_DIR) --binary-name hikyaku-$(FUNCTION) \
		--merge-env $(STACK_NAME)-$(FUNCTION)

# ---------------------------------------------------------------------------------------------
# Help
# ---------------------------------------------------------------------------------------------
.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'
