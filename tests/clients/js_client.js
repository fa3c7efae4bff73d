// Drives the official npm `durable-functions` DurableClient, unmodified, against a running
// Durango host, and prints one JSON object with everything it observed. The Rust test
// `tests/tests/official_clients.rs` runs it and makes the assertions.
//
// Environment:
//   DURANGO_MODE     "template" (the management-URL templates, on the main listener with the key)
//                    or "rpc" (the keyless `rpcBaseUrl`)
//   DURANGO_URL      the main listener's base, e.g. http://127.0.0.1:7071
//   DURANGO_KEY      the system key
//   DURANGO_RPC_URL  the RPC base, e.g. http://127.0.0.1:17071/durabletask/ (rpc mode)
//   DURANGO_ORCH     the orchestrator (default EchoAfterEvent: input = an event name, waits for
//                    that event, returns its data)
//   DURANGO_RUN      a prefix for the explicit instance ids (default: mode and pid)
//   NODE_PATH        where `durable-functions` is installed
//
// Exits 0 after printing the observations; on an unexpected error it prints what it saw so
// far (with "error") and exits 1.
"use strict";

const df = require("durable-functions");
// DurableClient is not re-exported by the package index, but the package has no "exports"
// map, so its module is importable; this is the class `df.getClient(context)` returns.
const { DurableClient } = require("durable-functions/lib/src/durableClient/DurableClient");

const mode = process.env.DURANGO_MODE || "template";
const orch = process.env.DURANGO_ORCH || "EchoAfterEvent";
const key = process.env.DURANGO_KEY || "";
const hub = "DurangoHub";
const connection = "Storage";
const deadlineMs = 30000;

// The JSON the Durable Functions extension hands to a client binding
// (BindingHelper.DurableOrchestrationClientToString), pointed at Durango's main listener.
function bindingData() {
    const base = `${process.env.DURANGO_URL.replace(/\/+$/, "")}/runtime/webhooks/durabletask`;
    const code = `code=${encodeURIComponent(key)}`;
    const mgmt = `taskHub=${hub}&connection=${connection}&${code}`;
    const inst = `${base}/instances/INSTANCEID`;
    const data = {
        taskHubName: hub,
        creationUrls: {
            createNewInstancePostUri: `${base}/orchestrators/{functionName}[/{instanceId}]?${code}`,
            createAndWaitOnNewInstancePostUri:
                `${base}/orchestrators/{functionName}[/{instanceId}]` +
                `?timeout={timeoutInSeconds}&pollingInterval={intervalInSeconds}&${code}`,
        },
        managementUrls: {
            id: "INSTANCEID",
            statusQueryGetUri: `${inst}?${mgmt}`,
            sendEventPostUri: `${inst}/raiseEvent/{eventName}?${mgmt}`,
            terminatePostUri: `${inst}/terminate?reason={text}&${mgmt}`,
            rewindPostUri: `${inst}/rewind?reason={text}&${mgmt}`,
            purgeHistoryDeleteUri: `${inst}?${mgmt}`,
            restartPostUri: `${inst}/restart?${mgmt}`,
            suspendPostUri: `${inst}/suspend?reason={text}&${mgmt}`,
            resumePostUri: `${inst}/resume?reason={text}&${mgmt}`,
        },
        baseUrl: base,
        requiredQueryStringParameters: code,
    };
    if (mode === "rpc") {
        let rpc = process.env.DURANGO_RPC_URL;
        if (!rpc) throw new Error("DURANGO_RPC_URL is not set");
        if (!rpc.endsWith("/")) rpc += "/";
        data.rpcBaseUrl = rpc;
    } else if (mode !== "template") {
        throw new Error(`unknown DURANGO_MODE ${mode}`);
    }
    return data;
}

const out = { mode, wire: [] };
let lastBody;

const client = new DurableClient(bindingData());
// Observation only: log each exchange the client makes (method, URL, status and, for the
// history read, the raw body, since the v3 client keeps `history` but the wire has
// `historyEvents`). Nothing the client sends or receives is changed.
client.axiosInstance.interceptors.response.use((response) => {
    out.wire.push({
        method: (response.config.method || "").toUpperCase(),
        url: response.config.url,
        status: response.status,
    });
    lastBody = response.data;
    return response;
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitForStatus(id, wanted) {
    const deadline = Date.now() + deadlineMs;
    for (;;) {
        const status = await client.getStatus(id);
        if (status.runtimeStatus === wanted) return status;
        if (Date.now() > deadline) {
            throw new Error(`${id} is still ${status.runtimeStatus}, not ${wanted}, after ${deadlineMs} ms`);
        }
        await sleep(50);
    }
}

async function failure(promise) {
    try {
        await promise;
        return null;
    } catch (e) {
        return String(e && e.message ? e.message : e);
    }
}

const ids = (list) => list.map((s) => s.instanceId).sort();

async function main() {
    const S = df.OrchestrationRuntimeStatus;
    const run = process.env.DURANGO_RUN || `${mode}-${process.pid}`;
    // Created times have one-second resolution: leave a margin on both sides.
    const from = new Date(Date.now() - 5000);

    // Start: a generated id with an input, and explicit ids.
    const generated = await client.startNew(orch, { input: "Go" });
    const explicitId = `${run}-explicit`;
    const explicit = await client.startNew(orch, { instanceId: explicitId, input: "Go" });
    const doomed = await client.startNew(orch, { instanceId: `${run}-doomed`, input: "Never" });
    out.ids = { generated, explicit, doomed };

    // Raise the awaited events; the orchestrations echo the data through an activity.
    await client.raiseEvent(generated, "Go", "hello from js");
    await client.raiseEvent(explicit, "Go", "second");
    const done = await waitForStatus(generated, S.Completed);
    out.completed = { runtimeStatus: done.runtimeStatus, output: done.output, input: done.input };
    out.explicitCompleted = (await waitForStatus(explicit, S.Completed)).output;

    // Status with history.
    const withHistory = await client.getStatus(generated, {
        showHistory: true,
        showHistoryOutput: true,
        showInput: true,
    });
    out.withHistory = {
        name: withHistory.name,
        instanceId: withHistory.instanceId,
        runtimeStatus: withHistory.runtimeStatus,
        input: withHistory.input,
        output: withHistory.output,
        createdTime: withHistory.createdTime.toISOString(),
        lastUpdatedTime: withHistory.lastUpdatedTime.toISOString(),
        clientHistory: withHistory.history === undefined ? null : withHistory.history,
        wireHistoryEvents: lastBody && lastBody.historyEvents,
    };
    // The third one waits for an event that never comes.
    out.doomedBefore = (await waitForStatus(doomed, S.Running)).runtimeStatus;

    // An event for a finished instance: 410, which the client takes as success.
    out.raiseAfterCompletion = await failure(client.raiseEvent(generated, "Go", "late"));
    // An unknown instance: 404, which the client turns into an error.
    out.unknownStatusError = await failure(client.getStatus(`${run}-nobody`));
    out.unknownRaiseError = await failure(client.raiseEvent(`${run}-nobody`, "Go", "x"));

    // Terminate the third one.
    await client.terminate(doomed, "no longer needed");
    const terminated = await waitForStatus(doomed, S.Terminated);
    out.terminated = { runtimeStatus: terminated.runtimeStatus, output: terminated.output };
    out.terminateAgain = await failure(client.terminate(doomed, "again"));

    // Listing.
    const to = new Date(Date.now() + 5000);
    out.all = ids(await client.getStatusAll());
    out.byCompleted = ids(
        await client.getStatusBy({ createdTimeFrom: from, createdTimeTo: to, runtimeStatus: [S.Completed] }),
    );
    out.byTerminated = ids(
        await client.getStatusBy({ createdTimeFrom: from, createdTimeTo: to, runtimeStatus: [S.Terminated] }),
    );
    out.byBoth = ids(
        await client.getStatusBy({
            createdTimeFrom: from,
            createdTimeTo: to,
            runtimeStatus: [S.Completed, S.Terminated],
        }),
    );
    out.byRunning = ids(
        await client.getStatusBy({ createdTimeFrom: from, createdTimeTo: to, runtimeStatus: [S.Running] }),
    );
    out.byPast = ids(
        await client.getStatusBy({
            createdTimeFrom: new Date(from.getTime() - 3600000),
            createdTimeTo: new Date(from.getTime() - 1800000),
        }),
    );

    // Purge one instance, then purge by filter.
    out.purgeOne = await client.purgeInstanceHistory(generated);
    out.statusAfterPurge = await failure(client.getStatus(generated));
    out.purgeOneAgain = await client.purgeInstanceHistory(generated);
    out.purgeByPast = await client.purgeInstanceHistoryBy({
        createdTimeFrom: new Date(from.getTime() - 3600000),
        createdTimeTo: new Date(from.getTime() - 1800000),
        runtimeStatus: [S.Completed, S.Terminated],
    });
    out.purgeBy = await client.purgeInstanceHistoryBy({
        createdTimeFrom: from,
        createdTimeTo: new Date(Date.now() + 5000),
        runtimeStatus: [S.Completed, S.Terminated],
    });
    out.allAfterPurge = ids(await client.getStatusAll());
}

main().then(
    () => {
        process.stdout.write(JSON.stringify(out) + "\n");
    },
    (e) => {
        out.error = String(e && e.stack ? e.stack : e);
        process.stdout.write(JSON.stringify(out) + "\n");
        process.exitCode = 1;
    },
);
