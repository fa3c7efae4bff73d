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


# Instance ids a purge (DELETE /instances/{instanceId}) removed during the run.
# A start under a caller's id creates that instance again, rightly; but
# schemathesis' `use_after_free` check only knows that the id was deleted, so
# a later GET answering 200 would count as a failure. Starts under a purged id
# are therefore sent under another one.
PURGED = set()


@schemathesis.hook
def before_call(context, case, kwargs):
    """Keep every phase (stateful sequences reuse names they saw in answers)
    from starting a deployed orchestrator outside ALLOWED: such a name is sent
    as one that is not deployed, which the host must refuse with a 400. And
    keep starts off purged ids (see PURGED)."""
    if "{name}" not in case.operation.path:
        return
    parameters = case.path_parameters or {}
    if parameters.get("instanceId") in PURGED:
        case.path_parameters["instanceId"] += "~after-purge"
    name = parameters.get("name")
    if not isinstance(name, str) or name in ALLOWED:
        return
    if DEPLOYED is None or name in DEPLOYED:
        case.path_parameters["name"] = name + "~not-deployed"


@schemathesis.hook
def after_call(context, case, response):
    """Note each instance a purge removed."""
    if (
        case.method.upper() == "DELETE"
        and case.operation.path.endswith("/instances/{instanceId}")
        and response.status_code == 200
    ):
        PURGED.add((case.path_parameters or {}).get("instanceId"))
