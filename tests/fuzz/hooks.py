"""Schemathesis hooks for tests/tests/api_fuzz.rs (loaded through SCHEMATHESIS_HOOKS)."""

import os

import schemathesis

# PUT /admin/apps/{app} takes a component as `application/wasm`: raw bytes,
# sent as they are (as for application/octet-stream).
schemathesis.serializer.alias("application/wasm", "application/octet-stream")

# The orchestrators a generated request may start: deployed ones that finish on
# their own within a moment, the `orchestrators` dictionary of
# schemathesis.toml (api_fuzz.rs passes it as DURANGO_FUZZ_ALLOWED). The test
# guests also hold orchestrators that spin, hoard memory, overflow the stack,
# call URLs from their input or wait for events forever; they have tests of
# their own, and here they would only make the run slow (a start with
# `timeout` waits for them) or reach out to the network.
ALLOWED = set(
    filter(
        None,
        os.environ.get(
            "DURANGO_FUZZ_ALLOWED", "E1_HelloSequence,Panics,NeedsSetting,Retries"
        ).split(","),
    )
)

# The deployed orchestrators, comma-separated, as api_fuzz.rs read them from
# GET /admin/apps. Without the list, every name outside ALLOWED is diverted.
_deployed = os.environ.get("DURANGO_FUZZ_DEPLOYED")
DEPLOYED = None if _deployed is None else set(filter(None, _deployed.split(",")))


@schemathesis.hook
def before_call(context, case, kwargs):
    """Keep every phase (stateful sequences reuse names they saw in answers)
    from starting a deployed orchestrator outside ALLOWED: such a name is sent
    as one that is not deployed, which the host must refuse with a 400."""
    if "{name}" not in case.operation.path:
        return
    name = (case.path_parameters or {}).get("name")
    if not isinstance(name, str) or name in ALLOWED:
        return
    if DEPLOYED is None or name in DEPLOYED:
        case.path_parameters["name"] = name + "~not-deployed"
