// Orchestrators the end-to-end tests use to prove the JavaScript SDK keeps
// Durango's guarantees: replay-safe clocks and randomness, the step check
// catching code that takes another step on replay, and strings that cross
// to the host whole.
import * as df from "../../guest-sdk/js/durango.js";

// Takes another first step on replay than it took the first time.
df.app.orchestration("JsNonDeterministic", function* (context) {
  if (context.df.isReplaying) {
    yield context.df.createTimer(new Date(context.df.currentUtcDateTime.getTime() + 1000));
  } else {
    yield context.df.callActivity("JsEcho", "first");
  }
  return yield context.df.waitForExternalEvent("Continue");
});

// Reads JavaScript's own clock and randomness: the sandbox makes them
// replay-safe. What it saw first is also its custom status, as seen on the
// first run; a replay must see the same. Each reading starts with the clock
// in milliseconds.
df.app.orchestration("JsClockAndRandom", function* (context) {
  const look = () => [Date.now(), new Date().toISOString(), Math.random(),
    crypto.getRandomValues(new Uint32Array(1))[0]].join("/");
  const seen = look();
  if (!context.df.isReplaying) {
    context.df.setCustomStatus(seen);
  }
  yield context.df.waitForExternalEvent("Continue");
  return `${seen} ${look()}`;
});

// Waits for "Answer" against an hour's timer (the benchmark's interaction
// scenario parks instances on it, as on the Rust WaitOrTimeout).
df.app.orchestration("JsWaitOrTimeout", function* (context) {
  const hour = new Date(context.df.currentUtcDateTime.getTime() + 3600 * 1000);
  const timer = context.df.createTimer(hour);
  const answer = context.df.waitForExternalEvent("Answer");
  const winner = yield context.df.Task.any([answer, timer]);
  if (winner === answer) {
    timer.cancel();
    return true;
  }
  return false;
});

// Reads a setting `reads` times, then takes `count` Tick events (the
// benchmark's replay scenario, as on the Rust Collect).
df.app.orchestration("JsCollect", function* (context) {
  const [count, reads] = context.df.getInput();
  for (let i = 0; i < reads; i++) {
    context.df.getSetting("BenchPadding");
  }
  for (let i = 0; i < count; i++) {
    yield context.df.waitForExternalEvent("Tick");
  }
  return count;
});

// Hands its input to an activity and returns what came back: each string
// crosses between the guest and the host on the way (the activity's input
// and result, the orchestration's output), and whether the SDK's native
// string encoding is in place.
df.app.orchestration("JsPassThrough", function* (context) {
  const echoed = yield context.df.callActivity("JsEcho", context.df.getInput());
  return { echoed, nativeStrings: df.nativeStrings };
});

// Logs through `context.log` and its levels before and after a wait: each
// line is written once, not again when the orchestration replays.
df.app.orchestration("JsLogs", function* (context) {
  context.log("before the wait:", context.df.getInput());
  context.log.warn("a warning");
  yield context.df.waitForExternalEvent("Continue");
  context.log.info("after the wait");
  return true;
});

df.app.activity("JsEcho", { handler: (input) => input });

export { app, orchestrator, activity } from "../../guest-sdk/js/durango.js";
