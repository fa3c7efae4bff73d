"""Drives the official PyPI `azure-functions-durable` DurableOrchestrationClient, unmodified,
against a running Durango host through its `rpcBaseUrl` (the only mode the Python SDK has), and
prints one JSON object with everything it observed. The Rust test
`tests/tests/official_clients.rs` runs it and makes the assertions.

Environment:
  DURANGO_RPC_URL  the RPC base, e.g. http://127.0.0.1:17071/durabletask/
  DURANGO_URL      the main listener's base (only used to fill the management-URL templates,
                   which the Python client never calls)
  DURANGO_KEY      the system key (idem)
  DURANGO_ORCH     the orchestrator (default EchoAfterEvent: input = an event name, waits for
                   that event, returns its data)
  DURANGO_RUN      a prefix for the explicit instance ids (default: py and pid)
  PYTHONPATH       where `azure-functions-durable` is installed

Note: the client JSON-encodes inputs and event data twice (json.dumps, then aiohttp's json=):
the host keeps the once-parsed value, a JSON string holding JSON, which the guest SDK decodes
as the inner JSON; reading the status back shows that string.

Exits 0 after printing the observations; on an unexpected error it prints what it saw so far
(with "error") and exits 1.
"""
import asyncio
import json
import os
import sys
import time
import traceback
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from azure.durable_functions import DurableOrchestrationClient, OrchestrationRuntimeStatus
from azure.durable_functions.models.utils import http_utils

ORCH = os.environ.get("DURANGO_ORCH", "EchoAfterEvent")
HUB = "DurangoHub"
CONNECTION = "Storage"
DEADLINE_SECONDS = 30.0


def binding_json() -> str:
    """The JSON the Durable Functions extension hands to a client binding."""
    rpc = os.environ["DURANGO_RPC_URL"]
    if not rpc.endswith("/"):
        rpc += "/"  # the client concatenates: f"{rpc_base_url}instances/..."
    base = os.environ.get("DURANGO_URL", "http://127.0.0.1:7071").rstrip("/")
    base += "/runtime/webhooks/durabletask"
    code = f"code={quote(os.environ.get('DURANGO_KEY', ''))}"
    mgmt = f"taskHub={HUB}&connection={CONNECTION}&{code}"
    inst = f"{base}/instances/INSTANCEID"
    return json.dumps({
        "taskHubName": HUB,
        "creationUrls": {
            "createNewInstancePostUri": f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]?{code}",
            "createAndWaitOnNewInstancePostUri":
                f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
                f"?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&{code}",
        },
        "managementUrls": {
            "id": "INSTANCEID",
            "statusQueryGetUri": f"{inst}?{mgmt}",
            "sendEventPostUri": f"{inst}/raiseEvent/{{eventName}}?{mgmt}",
            "terminatePostUri": f"{inst}/terminate?reason={{text}}&{mgmt}",
            "rewindPostUri": f"{inst}/rewind?reason={{text}}&{mgmt}",
            "purgeHistoryDeleteUri": f"{inst}?{mgmt}",
            "restartPostUri": f"{inst}/restart?{mgmt}",
            "suspendPostUri": f"{inst}/suspend?reason={{text}}&{mgmt}",
            "resumePostUri": f"{inst}/resume?reason={{text}}&{mgmt}",
        },
        "baseUrl": base,
        "requiredQueryStringParameters": code,
        "rpcBaseUrl": rpc,
    })


OUT: dict = {"mode": "rpc"}


def status_name(status) -> str:
    value = status.runtime_status
    return value.value if isinstance(value, OrchestrationRuntimeStatus) else value


async def wait_for_status(client, instance_id: str, wanted: OrchestrationRuntimeStatus):
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        status = await client.get_status(instance_id)
        if status.runtime_status == wanted:
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(f"{instance_id} is still {status_name(status)}, "
                               f"not {wanted.value}, after {DEADLINE_SECONDS} s")
        await asyncio.sleep(0.05)


async def failure(coro):
    try:
        await coro
        return None
    except Exception as e:  # noqa: BLE001 - the message is the observation
        return str(e) or type(e).__name__


def ids(statuses) -> list:
    return sorted(s.instance_id for s in statuses)


async def main():
    client = DurableOrchestrationClient(binding_json())
    S = OrchestrationRuntimeStatus
    run = os.environ.get("DURANGO_RUN") or f"py-{os.getpid()}"
    # Created times have one-second resolution: leave a margin on both sides.
    frm = datetime.now(timezone.utc) - timedelta(seconds=5)

    # Start: a generated id with an input, and explicit ids.
    generated = await client.start_new(ORCH, client_input="Go")
    explicit = await client.start_new(ORCH, instance_id=f"{run}-explicit", client_input="Go")
    doomed = await client.start_new(ORCH, f"{run}-doomed", "Never")
    OUT["ids"] = {"generated": generated, "explicit": explicit, "doomed": doomed}

    # Raise the awaited events; the orchestrations echo the data through an activity.
    await client.raise_event(generated, "Go", "hello from py")
    await client.raise_event(explicit, "Go", "second")
    done = await wait_for_status(client, generated, S.Completed)
    OUT["completed"] = {"runtimeStatus": status_name(done), "output": done.output,
                        "input": done.input_}
    OUT["explicitCompleted"] = (await wait_for_status(client, explicit, S.Completed)).output

    # Status with history (the client puts unknown fields, here historyEvents, on the object).
    st = await client.get_status(generated, show_history=True, show_history_output=True,
                                 show_input=True)
    OUT["withHistory"] = {
        "name": st.name,
        "instanceId": st.instance_id,
        "runtimeStatus": status_name(st),
        "input": st.input_,
        "output": st.output,
        "createdTime": st.created_time.isoformat() if st.created_time else None,
        "lastUpdatedTime": st.last_updated_time.isoformat() if st.last_updated_time else None,
        "historyEvents": getattr(st, "historyEvents", None),
    }
    # The third one waits for an event that never comes.
    OUT["doomedBefore"] = status_name(await wait_for_status(client, doomed, S.Running))

    # An event for a finished instance: 410, which this client raises as an error.
    OUT["raiseAfterCompletion"] = await failure(client.raise_event(generated, "Go", "late"))
    # An unknown instance: 404; get_status returns an empty (falsy) status.
    unknown = await client.get_status(f"{run}-nobody")
    OUT["unknownStatus"] = {"truthy": bool(unknown), "runtimeStatus": unknown.runtime_status}
    OUT["unknownRaiseError"] = await failure(client.raise_event(f"{run}-nobody", "Go", "x"))

    # Terminate the third one.
    await client.terminate(doomed, "no longer needed")
    terminated = await wait_for_status(client, doomed, S.Terminated)
    OUT["terminated"] = {"runtimeStatus": status_name(terminated), "output": terminated.output}
    OUT["terminateAgain"] = await failure(client.terminate(doomed, "again"))

    # Listing.
    to = datetime.now(timezone.utc) + timedelta(seconds=5)
    OUT["all"] = ids(await client.get_status_all())
    OUT["byCompleted"] = ids(await client.get_status_by(frm, to, [S.Completed]))
    OUT["byTerminated"] = ids(await client.get_status_by(frm, to, [S.Terminated]))
    OUT["byBoth"] = ids(await client.get_status_by(
        created_time_from=frm, created_time_to=to, runtime_status=[S.Completed, S.Terminated]))
    OUT["byRunning"] = ids(await client.get_status_by(frm, to, [S.Running]))
    OUT["byPast"] = ids(await client.get_status_by(
        frm - timedelta(hours=1), frm - timedelta(minutes=30)))

    # Purge one instance, then purge by filter.
    OUT["purgeOne"] = (await client.purge_instance_history(generated)).instances_deleted
    OUT["statusAfterPurge"] = bool(await client.get_status(generated))
    OUT["purgeOneAgain"] = (await client.purge_instance_history(generated)).instances_deleted
    OUT["purgeByPast"] = (await client.purge_instance_history_by(
        frm - timedelta(hours=1), frm - timedelta(minutes=30),
        [S.Completed, S.Terminated])).instances_deleted
    OUT["purgeBy"] = (await client.purge_instance_history_by(
        created_time_from=frm, created_time_to=datetime.now(timezone.utc) + timedelta(seconds=5),
        runtime_status=[S.Completed, S.Terminated])).instances_deleted
    OUT["allAfterPurge"] = ids(await client.get_status_all())


async def run() -> int:
    code = 0
    try:
        await main()
    except Exception:  # noqa: BLE001 - reported to the Rust test
        OUT["error"] = traceback.format_exc()
        code = 1
    finally:
        await http_utils._close_session()
    print(json.dumps(OUT, default=str))
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(run()))
