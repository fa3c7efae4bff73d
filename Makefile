# The two commands: `make demo` builds everything and serves the samples on
# the embedded SQLite default; `make test` runs every test.

CARGO       ?= cargo
TARGET_DIR  ?= $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),$(CURDIR)/target)
WASM_DIR    := $(TARGET_DIR)/wasm32-wasip2/guest
DURANGO     := $(TARGET_DIR)/debug/durango
GUESTS      := phone-verification hello-sequence approval monitor test-guests versioned
# JavaScript function apps: the samples, built with the toolchain that
# guest-sdk/js/package.json pins (installed under the target folder).
JS_APPS     := hello_sequence_js phone_verification_js test_guests_js
JS_WASM     := $(JS_APPS:%=$(WASM_DIR)/%.wasm)
JS_TOOLS    := $(TARGET_DIR)/js-toolchain
# Python function apps, built with the componentize-py that
# guest-sdk/python/requirements.txt pins (a venv under the target folder).
PY_APPS     := hello_sequence_py phone_verification_py test_guests_py
PY_WASM     := $(PY_APPS:%=$(WASM_DIR)/%.wasm)
PY_TOOLS    := $(TARGET_DIR)/py-toolchain
SAMPLES     := $(WASM_DIR)/phone_verification.wasm $(WASM_DIR)/hello_sequence.wasm $(WASM_DIR)/approval.wasm $(WASM_DIR)/monitor.wasm \
               $(WASM_DIR)/phone_verification_js.wasm $(WASM_DIR)/hello_sequence_js.wasm \
               $(WASM_DIR)/phone_verification_py.wasm $(WASM_DIR)/hello_sequence_py.wasm
DEMO_DB     ?= durango.db
DEMO_SMS    ?= 127.0.0.1:7072
# The end-to-end suites run a second time with each host on a database of
# its own on a throwaway PostgreSQL server (tests/src/postgres.rs).
PG_SUITES   := phone_verification durability management approval notifications bad_input api patterns upgrade versions dashboard metrics traces

export CARGO_TARGET_DIR := $(TARGET_DIR)

.PHONY: all setup test-tools guests js-guests py-guests build demo test lint fmt clean FORCE

all: build

# The wasm target is the only thing the toolchain needs beyond the default.
setup:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

guests: setup js-guests py-guests
	$(CARGO) build --profile guest --target wasm32-wasip2 $(addprefix -p ,$(GUESTS))
	@# The versions of the app the upgrade tests move instances between.
	cp $(WASM_DIR)/versioned.wasm $(WASM_DIR)/versioned_v1.wasm
	$(CARGO) build --profile guest --target wasm32-wasip2 -p versioned --features v2
	cp $(WASM_DIR)/versioned.wasm $(WASM_DIR)/versioned_v2.wasm
	$(CARGO) build --profile guest --target wasm32-wasip2 -p versioned --features v3
	cp $(WASM_DIR)/versioned.wasm $(WASM_DIR)/versioned_v3.wasm

# npm ci again only when the pinned toolchain changed (by content: a fresh
# clone's files are all new); the stamp moves only then.
$(JS_TOOLS)/.installed: FORCE
	@if ! cmp -s guest-sdk/js/package-lock.json $(JS_TOOLS)/package-lock.json || [ ! -f $@ ]; then \
	  missing=""; command -v npm >/dev/null || missing="nodejs npm"; $(APT_INSTALL); \
	  mkdir -p $(JS_TOOLS) && \
	  cp guest-sdk/js/package.json guest-sdk/js/package-lock.json $(JS_TOOLS)/ && \
	  (cd $(JS_TOOLS) && npm ci --no-audit --no-fund --loglevel=error) && \
	  touch $@; \
	fi

FORCE:

.SECONDEXPANSION:
# A JavaScript app: its modules bundled into one (esbuild), then made a
# component of the function-app world (componentize-js).
$(WASM_DIR)/%_js.wasm: $(JS_TOOLS)/.installed guest-sdk/js/durango.js wit/durango.wit $$(wildcard orchestrators/$$(subst _,-,$$*)-js/*.js)
	mkdir -p $(WASM_DIR)
	$(JS_TOOLS)/node_modules/.bin/esbuild orchestrators/$(subst _,-,$*)-js/index.js --bundle --format=esm \
	  --external:'durango:*' --log-level=warning --outfile=$(WASM_DIR)/$*_js.bundle.js
	node $(JS_TOOLS)/node_modules/.bin/componentize-js --wit wit --world-name function-app \
	  -o $@ $(WASM_DIR)/$*_js.bundle.js

js-guests: $(JS_WASM)

# The venv made again only when the pin changed (by content, as above).
$(PY_TOOLS)/.installed: FORCE
	@if ! cmp -s guest-sdk/python/requirements.txt $(PY_TOOLS)/requirements.txt || [ ! -f $@ ]; then \
	  missing=""; python3 -c 'import venv, ensurepip' 2>/dev/null || missing="python3 python3-venv"; $(APT_INSTALL); \
	  rm -rf $(PY_TOOLS) && python3 -m venv $(PY_TOOLS) && \
	  $(PY_TOOLS)/bin/pip install --quiet --disable-pip-version-check -r guest-sdk/python/requirements.txt && \
	  cp guest-sdk/python/requirements.txt $(PY_TOOLS)/ && \
	  touch $@; \
	fi

# A Python app: its folder's function_app module and the SDK made a
# component (componentize-py). The world is function-app with wasi:http
# named, so that the SDK gets bindings for its activities' HTTP.
$(WASM_DIR)/%_py.wasm: $(PY_TOOLS)/.installed $(wildcard guest-sdk/python/durango/*.py) wit/durango.wit $$(wildcard orchestrators/$$(subst _,-,$$*)-py/*.py)
	mkdir -p $(WASM_DIR)
	$(PY_TOOLS)/bin/componentize-py -d wit -w function-app-http componentize function_app \
	  -p orchestrators/$(subst _,-,$*)-py -p guest-sdk/python -o $@

py-guests: $(PY_WASM)

build: guests
	$(CARGO) build -p durango

# Serves the samples. Without Twilio credentials in the environment, a local
# fake SMS endpoint stands in for Twilio and prints each code it "sends".
demo: build
	@if [ -z "$$TwilioAccountSid" ]; then \
	  echo "No TwilioAccountSid set: SMS go to the local fake endpoint on $(DEMO_SMS)."; \
	  $(DURANGO) fake-sms --listen $(DEMO_SMS) & \
	  trap 'kill %1 2>/dev/null' EXIT INT TERM; \
	  export TwilioAccountSid=ACdemo TwilioAuthToken=demo-token TwilioPhoneNumber=+15005550006 \
	         TwilioBaseUrl=http://$(DEMO_SMS) ApprovalWebhookUrl=$${ApprovalWebhookUrl:-http://$(DEMO_SMS)/webhook}; \
	fi; \
	DURANGO_SECRET_SETTINGS=TwilioAuthToken $(DURANGO) serve --db $(DEMO_DB) --compile-cache $(TARGET_DIR)/compile-cache $(addprefix --deploy ,$(SAMPLES))

# What the tests drive besides the host: PostgreSQL's server binaries (the
# suites start throwaway servers of their own) and headless Chromium with
# its WebDriver (the dashboard's test). Debian's packages, when missing.
test-tools:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || [ -x "$$(pg_config --bindir 2>/dev/null)/postgres" ] || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	$(APT_INSTALL)

# Installs Debian's packages named in $$missing, if any.
APT_INSTALL = if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends $$missing; \
	fi

test: build test-tools
	DURANGO_BIN=$(DURANGO) DURANGO_WASM_DIR=$(WASM_DIR) $(CARGO) test --workspace $(addprefix --exclude ,$(GUESTS))
	DURANGO_TEST_DB=postgres DURANGO_BIN=$(DURANGO) DURANGO_WASM_DIR=$(WASM_DIR) $(CARGO) test -p durango-e2e $(addprefix --test ,$(PG_SUITES))

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy -p durango -p durango-e2e --all-targets -- -D warnings
	$(CARGO) clippy --target wasm32-wasip2 -p durango-sdk $(addprefix -p ,$(GUESTS)) -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
