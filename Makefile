# The two commands: `make demo` builds everything and serves the samples on
# the embedded SQLite default; `make test` runs every test.

CARGO       ?= cargo
TARGET_DIR  ?= $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),$(CURDIR)/target)
WASM_DIR    := $(TARGET_DIR)/wasm32-wasip2/guest
DURANGO     := $(TARGET_DIR)/debug/durango
GUESTS      := phone-verification hello-sequence approval monitor test-guests versioned
SAMPLES     := $(WASM_DIR)/phone_verification.wasm $(WASM_DIR)/hello_sequence.wasm $(WASM_DIR)/approval.wasm $(WASM_DIR)/monitor.wasm
DEMO_DB     ?= durango.db
DEMO_SMS    ?= 127.0.0.1:7072
# The end-to-end suites run a second time with each host on a database of
# its own on a throwaway PostgreSQL server (tests/src/postgres.rs).
PG_SUITES   := phone_verification durability management approval notifications bad_input api patterns upgrade versions traces

export CARGO_TARGET_DIR := $(TARGET_DIR)

.PHONY: all setup guests build demo test lint fmt clean

all: build

# The wasm target is the only thing the toolchain needs beyond the default.
setup:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

guests: setup
	$(CARGO) build --profile guest --target wasm32-wasip2 $(addprefix -p ,$(GUESTS))
	@# The versions of the app the upgrade tests move instances between.
	cp $(WASM_DIR)/versioned.wasm $(WASM_DIR)/versioned_v1.wasm
	$(CARGO) build --profile guest --target wasm32-wasip2 -p versioned --features v2
	cp $(WASM_DIR)/versioned.wasm $(WASM_DIR)/versioned_v2.wasm
	$(CARGO) build --profile guest --target wasm32-wasip2 -p versioned --features v3
	cp $(WASM_DIR)/versioned.wasm $(WASM_DIR)/versioned_v3.wasm

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
	DURANGO_SECRET_SETTINGS=TwilioAuthToken $(DURANGO) serve --db $(DEMO_DB) $(addprefix --deploy ,$(SAMPLES))

test: build
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
