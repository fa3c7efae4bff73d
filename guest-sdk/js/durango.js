// Durango's JavaScript SDK: the Durable Functions JavaScript programming
// model (v4: `df.app.orchestration`, `df.app.activity`, generator
// orchestrators yielding tasks) on the host's WIT world
// `durango:orchestration/function-app`. An app's entry module registers its
// functions and re-exports what the component exports:
//
//   import * as df from "./durango.js";
//   df.app.orchestration("Hello", function* (context) { ... });
//   df.app.activity("SayHello", { handler: (name) => `Hello ${name}!` });
//   export { app, orchestrator, activity } from "./durango.js";
//
// Built with componentize-js against `wit/`; the host runs it exactly as a
// Rust component: every host call below is the same deterministic call.

import * as host from "durango:orchestration/orchestration@0.1.0";
import * as settings from "durango:orchestration/settings@0.1.0";
import * as links from "durango:orchestration/links@0.1.0";

const orchestrators = new Map();
const activities = new Map();

// ---- strings to the host ---------------------------------------------------

// componentize-js 0.23's bindings hand every string to the host (an
// activity's input and result, an orchestration's output, a name) through
// `_utf8AllocateAndEncode`, which measures the UTF-8 length with a
// JavaScript loop over the characters: in SpiderMonkey's interpreter about
// 2,500 wasm instructions a character, so a 1 KB result cost a
// millisecond (BENCHMARKS.md, session 18). The bindings run in a global of
// their own, where that helper is a writable function; this SDK puts the
// same encoding there, done natively, once the helper has shown it is the
// one this SDK knows (`encodesAsExpected`), so other bindings keep theirs.
const UTF8 = new TextEncoder();
const SURROGATE_PAIR = /[\uD800-\uDBFF][\uDC00-\uDFFF]/g;

/** The helper's contract: `s` in UTF-8, in `memory` at an allocation of
 * its exact length by `realloc`, and where it is and its code points. */
function utf8AllocateAndEncode(s, realloc, memory) {
  if (typeof s !== "string") throw new TypeError(`expected a string, received [${typeof s}]`);
  if (s.length === 0) return { ptr: 1, len: 0 };
  const bytes = UTF8.encode(s);
  const len = bytes.length;
  const ptr = realloc(0, 0, 1, len);
  new Uint8Array(memory.buffer, ptr, len).set(bytes);
  // As many code points as UTF-16 units, but one for a surrogate pair.
  const codepoints = len === s.length ? len : s.length - (s.match(SURROGATE_PAIR)?.length ?? 0);
  return { ptr, len, codepoints };
}

/** Whether `encode` keeps that contract, on a two-, a four-byte character. */
function encodesAsExpected(encode) {
  const allocations = [];
  const memory = { buffer: new ArrayBuffer(8) };
  const realloc = (...args) => {
    allocations.push(args.join());
    return 1;
  };
  const where = encode("é🦀", realloc, memory);
  return allocations.join(";") === "0,0,1,6" && where.ptr === 1 && where.len === 6 &&
    where.codepoints === 2 && new Uint8Array(memory.buffer, 1, 6).join() === "195,169,240,159,166,128";
}

/** Whether the bindings encode strings with `utf8AllocateAndEncode`. */
export const nativeStrings = (() => {
  try {
    // A host function is the bindings': its constructor evaluates in their global.
    const bindings = host.callActivity.constructor("return this")();
    const theirs = bindings._utf8AllocateAndEncode;
    if (typeof theirs !== "function" || !encodesAsExpected(theirs)) return false;
    // Module code is strict: were the property not writable, this would throw.
    bindings._utf8AllocateAndEncode = utf8AllocateAndEncode;
    return true;
  } catch {
    return false;
  }
})();

// ---- tasks ------------------------------------------------------------------

/** A unit of durable work the orchestrator yields and the host completes. */
export class Task {
  constructor(id) {
    this.id = id;
  }

  /** The host's outcome: undefined while open, else `{tag: "ok"|"err", val}`. */
  outcome() {
    return host.taskResult(this.id);
  }

  get isCompleted() {
    return this.outcome() !== undefined;
  }

  get isFaulted() {
    return this.outcome()?.tag === "err";
  }

  /** The completed task's value (JSON-decoded), as Durable Functions gives it. */
  get result() {
    const outcome = this.outcome();
    return outcome?.tag === "ok" ? JSON.parse(outcome.val) : undefined;
  }

  /** What yielding this task gives back: pending, a value, or an error. */
  settle() {
    const outcome = this.outcome();
    if (outcome === undefined) return PENDING;
    if (outcome.tag === "ok") return { value: JSON.parse(outcome.val) };
    return { error: new Error(outcome.val) };
  }

  atomicIds() {
    return [this.id];
  }
}

/** A durable timer; `cancel()` drops it when the orchestration moves on. */
export class TimerTask extends Task {
  get isCancelled() {
    return this.cancelled === true;
  }

  cancel() {
    if (!this.isCompleted) {
      host.cancelTimer(this.id);
      this.cancelled = true;
    }
  }
}

/** An external event wait; `sender` says who raised it (verified by the host). */
export class EventTask extends Task {
  get sender() {
    const sender = host.taskSender(this.id);
    if (sender === undefined) return undefined;
    return sender.tag === "holder" ? { holder: sender.val } : { kind: sender.tag };
  }
}

const PENDING = Object.freeze({ pending: true });
/** The poll result of an orchestration that waits. */
const POLL_PENDING = Object.freeze({ tag: "pending" });

/** The first of several tasks to complete (`Task.any`): yields that task. */
class WhenAny {
  constructor(tasks) {
    this.tasks = onlyAtomic(tasks, "Task.any");
  }

  settle() {
    const index = host.whenAny(Uint32Array.from(this.tasks.map((t) => t.id)));
    return index === undefined ? PENDING : { value: this.tasks[index] };
  }
}

/** All of several tasks (`Task.all`): yields their values in order, or the
 * first failure as soon as one fails. */
class WhenAll {
  constructor(tasks) {
    this.tasks = onlyAtomic(tasks, "Task.all");
  }

  settle() {
    const settled = this.tasks.map((t) => t.settle());
    const failed = settled.find((s) => s.error);
    if (failed) return failed;
    if (settled.some((s) => s.pending)) return PENDING;
    return { value: settled.map((s) => s.value) };
  }
}

function onlyAtomic(tasks, what) {
  const list = Array.from(tasks);
  for (const task of list) {
    if (!(task instanceof Task)) {
      throw new TypeError(`${what} takes tasks made by context.df (activities, timers, events, sub-orchestrations)`);
    }
  }
  return list;
}

/** `context.df.Task`, as in Durable Functions. */
export const TaskSet = Object.freeze({
  any: (tasks) => new WhenAny(tasks),
  all: (tasks) => new WhenAll(tasks),
});

// ---- retries ----------------------------------------------------------------

/** How the host retries a failing activity, as `df.RetryOptions`. */
export class RetryOptions {
  constructor(firstRetryIntervalInMilliseconds, maxNumberOfAttempts) {
    this.firstRetryIntervalInMilliseconds = firstRetryIntervalInMilliseconds;
    this.maxNumberOfAttempts = maxNumberOfAttempts;
    this.backoffCoefficient = 1;
    this.maxRetryIntervalInMilliseconds = 0;
    this.retryTimeoutInMilliseconds = 0;
  }

  toPolicy() {
    return {
      maxAttempts: this.maxNumberOfAttempts,
      firstRetryIntervalMs: BigInt(Math.max(0, Math.round(this.firstRetryIntervalInMilliseconds))),
      backoffCoefficient: this.backoffCoefficient,
      maxRetryIntervalMs: BigInt(Math.max(0, Math.round(this.maxRetryIntervalInMilliseconds))),
      attemptTimeoutMs: BigInt(Math.max(0, Math.round(this.retryTimeoutInMilliseconds))),
    };
  }
}

// ---- the orchestration context ---------------------------------------------

function json(value) {
  return JSON.stringify(value === undefined ? null : value);
}

class DurableOrchestrationContext {
  constructor(input) {
    this.input = input;
    this.Task = TaskSet;
    this.continuedWith = undefined;
  }

  get instanceId() {
    return host.instanceId();
  }

  get isReplaying() {
    return host.isReplaying();
  }

  /** The orchestration's clock: when the current episode started. */
  get currentUtcDateTime() {
    return new Date(Number(host.currentTime()));
  }

  getInput() {
    return this.input;
  }

  newGuid() {
    return host.newGuid();
  }

  callActivity(name, input) {
    return new Task(host.callActivity(name, json(input), undefined));
  }

  callActivityWithRetry(name, retryOptions, input) {
    return new Task(host.callActivity(name, json(input), retryOptions.toPolicy()));
  }

  callSubOrchestrator(name, input, instanceId) {
    return new Task(host.callSubOrchestrator(name, json(input), instanceId ?? undefined));
  }

  callSubOrchestratorWithRetry(name, _retryOptions, input, instanceId) {
    // Sub-orchestrations are not retried by the host; run it once.
    return this.callSubOrchestrator(name, input, instanceId);
  }

  /** A durable timer firing at `fireAt` (a Date, or milliseconds since the epoch). */
  createTimer(fireAt) {
    const at = fireAt instanceof Date ? fireAt.getTime() : Number(fireAt);
    if (!Number.isFinite(at)) throw new TypeError("createTimer takes a Date or milliseconds since the epoch");
    return new TimerTask(host.createTimer(BigInt(Math.max(0, Math.round(at)))));
  }

  waitForExternalEvent(name) {
    return new EventTask(host.waitForEvent(name));
  }

  setCustomStatus(status) {
    host.setCustomStatus(status === undefined || status === null ? undefined : JSON.stringify(status));
  }

  /** Start over with `input` once the orchestrator returns (an eternal orchestration's next round). */
  continueAsNew(input) {
    this.continuedWith = json(input);
  }

  /** A non-secret app setting, recorded in history on first read. */
  getSetting(name) {
    return host.getSetting(name);
  }

  /** Whether this instance runs the code after patch `name` (see the README). */
  patched(name) {
    return host.patched(name);
  }

  get startedVersion() {
    return host.startedVersion();
  }
}

/** What an orchestrator function is given: `context.df`, and `context.log`
 * (made on first use: most orchestrations never log, and its closures were
 * a twelfth of a start's work). */
class OrchestrationContext {
  constructor(df) {
    this.df = df;
  }

  get log() {
    const log = orchestrationLogger();
    Object.defineProperty(this, "log", { value: log, writable: true });
    return log;
  }
}

/** A log written once, not again on replay (`context.log`, `context.warn`, …). */
function orchestrationLogger() {
  const at = (level) => (...parts) => host.log(level, parts.map(String).join(" "));
  const log = at("info");
  return Object.assign(log, { trace: at("trace"), debug: at("debug"), info: log, warn: at("warn"), error: at("error") });
}

// ---- running an orchestration ------------------------------------------------

// The running orchestration: the guest keeps it between the host's calls.
let running = null;
// Whether this guest told the host it may be reused (`allowReuse`).
let reuseAllowed = false;

function errorWords(error) {
  if (error instanceof Error) return error.message || String(error);
  return typeof error === "string" ? error : json(error);
}

/** Runs the generator until it waits for an open task or finishes. */
function drive(state, sent) {
  let next = sent;
  for (;;) {
    let step;
    try {
      step = next.error ? state.generator.throw(next.error) : state.generator.next(next.value);
    } catch (error) {
      running = null;
      return { tag: "failed", val: errorWords(error) };
    }
    if (step.done) {
      running = null;
      const continued = state.context.continuedWith;
      return continued === undefined
        ? { tag: "completed", val: json(step.value) }
        : { tag: "continued-as-new", val: continued };
    }
    const task = step.value;
    if (!task || typeof task.settle !== "function") {
      next = { error: new TypeError("an orchestrator yields tasks made by context.df (callActivity, createTimer, waitForExternalEvent, Task.any, Task.all)") };
      continue;
    }
    const settled = settleOrAdvance(state, task);
    if (settled.pending) {
      state.waitingOn = task;
      return POLL_PENDING;
    }
    next = settled;
  }
}

/** What `task` gives now. While the host replays history into this guest,
 * each event it reveals (`advance`) is looked at in this same call; once it
 * has none left, the orchestration runs live and the host is not asked
 * again (it resumes the guest for each new event). */
function settleOrAdvance(state, task) {
  let settled = task.settle();
  while (settled.pending && state.advancing) {
    state.advancing = host.advance();
    if (state.advancing) settled = task.settle();
  }
  return settled;
}

function isGenerator(value) {
  return value && typeof value.next === "function" && typeof value.throw === "function";
}

// ---- the component's exports -------------------------------------------------

/** The function table (the WIT export `app`) and the registration of
 * functions (Durable Functions' `df.app`). */
export const app = {
  functions() {
    return [
      ...[...orchestrators.keys()].map((name) => ({ name, kind: "orchestrator" })),
      ...[...activities.keys()].map((name) => ({ name, kind: "activity" })),
    ];
  },

  /** Registers a generator function as orchestrator `name`. */
  orchestration(name, handler) {
    if (typeof handler !== "function") throw new TypeError(`orchestration ${name} needs a generator function`);
    orchestrators.set(name, handler);
  },

  /** Registers activity `name`: a function, or `{ handler }` as in Durable Functions v4. */
  activity(name, options) {
    const handler = typeof options === "function" ? options : options?.handler;
    if (typeof handler !== "function") throw new TypeError(`activity ${name} needs a handler function`);
    activities.set(name, handler);
  },
};

/** The WIT export `orchestrator`. */
export const orchestrator = {
  start(name, input) {
    // Each start resets what the guest keeps (the running orchestration;
    // Math.random draws from the instance's WASI randomness, which the
    // host seeds anew): the host may run the next one in this guest. The
    // host keeps that promise for the guest's life: it is made once.
    running = null;
    if (!reuseAllowed) {
      host.allowReuse();
      reuseAllowed = true;
    }
    const handler = orchestrators.get(name);
    if (!handler) return { tag: "failed", val: `no orchestrator named ${name} in this app` };
    let parsed;
    try {
      parsed = JSON.parse(input);
    } catch {
      return { tag: "failed", val: "the orchestration input is not JSON" };
    }
    const context = new OrchestrationContext(new DurableOrchestrationContext(parsed));
    let produced;
    try {
      produced = handler(context, parsed);
    } catch (error) {
      return { tag: "failed", val: errorWords(error) };
    }
    if (!isGenerator(produced)) {
      // A plain function: its return value is the output.
      const continued = context.df.continuedWith;
      return continued === undefined
        ? { tag: "completed", val: json(produced) }
        : { tag: "continued-as-new", val: continued };
    }
    running = { generator: produced, context: context.df, waitingOn: null, advancing: true };
    return drive(running, { value: undefined });
  },

  resume() {
    if (!running) return { tag: "failed", val: "no orchestration is running in this instance" };
    const settled = settleOrAdvance(running, running.waitingOn);
    return settled.pending ? POLL_PENDING : drive(running, settled);
  },
};

/** What an activity knows about its call, and the app's settings. */
class ActivityContext {
  constructor(context) {
    this.instanceId = context.instanceId;
    this.idempotencyKey = context.idempotencyKey;
    this.attempt = context.attempt;
    this.sendEventUrl = context.sendEventUrl;
    this.statusUrl = context.statusUrl;
  }

  /** An app setting (secrets included); undefined when unset. */
  setting(name) {
    return settings.get(name);
  }

  /** An app setting that must be set. */
  requiredSetting(name) {
    const value = settings.get(name);
    if (value === undefined) throw new Error(`the setting ${name} is not set`);
    return value;
  }

  /** A URL `holder` can POST `event`'s data to (expires at `expiresAt`, a Date, if given). */
  eventLink(event, holder, expiresAt) {
    return links.eventLink(event, holder, expiresAt ? BigInt(expiresAt.getTime()) : undefined);
  }

  statusLink(holder, expiresAt) {
    return links.statusLink(holder, expiresAt ? BigInt(expiresAt.getTime()) : undefined);
  }
}

/** The WIT export `activity`: runs one call to completion (async handlers
 * included: the runtime runs the event loop until the promise settles). */
export const activity = {
  run(name, input, context) {
    const handler = activities.get(name);
    if (!handler) throw `no activity named ${name} in this app`;
    let parsed;
    try {
      parsed = JSON.parse(input);
    } catch {
      throw "the activity input is not JSON";
    }
    let result;
    try {
      result = handler(parsed, new ActivityContext(context));
    } catch (error) {
      throw errorWords(error);
    }
    if (typeof result?.then !== "function") return json(result);
    return result.then(json, (error) => {
      throw errorWords(error);
    });
  },
};
