//! Durability: `kill -9` and restart on the same database lose nothing, and
//! the cold path (replay from rows) gives what the hot path gives.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use durango_e2e::{in_every_language, wait_until, FakeSms, Host, HostOptions, PhoneSample, WAIT};
use serde_json::{json, Value};

in_every_language!(
    a_verification_survives_kill_9_while_waiting,
    after_a_kill_inside_the_sms_send_the_code_the_person_got_still_works,
    an_acknowledged_event_survives_kill_9_before_it_is_handled,
    hot_path_and_cold_replay_give_the_same_result,
);

fn a_verification_survives_kill_9_while_waiting(sample: PhoneSample) {
    let sms = FakeSms::start();
    let mut host = Host::start(sample.options(&sms));
    let id = sample.start(&host, "+14255550201", 300);
    let code = sms.code_sent_to("+14255550201");
    host.wait_history(&id, "TaskCompleted", 1);

    host.restart();
    assert_eq!(host.status(&id).body["runtimeStatus"], "Running");
    host.raise(&id, "SmsChallengeResponse", &(code + 1).to_string());
    host.restart();
    assert_eq!(
        host.raise(&id, "SmsChallengeResponse", &code.to_string())
            .status,
        202
    );
    let status = host.wait_finished(&id);
    assert_eq!(status["output"], json!(true));
    assert_eq!(sms.messages().len(), 1, "the SMS activity ran exactly once");
}

fn after_a_kill_inside_the_sms_send_the_code_the_person_got_still_works(sample: PhoneSample) {
    // Twilio takes the message, then the host dies before it hears back:
    // the activity runs again after the restart. It must draw the same
    // code and send it under the same idempotency token, so the provider
    // sends nothing new and the one code the person holds is the right one.
    let sms = FakeSms::answering_after(Duration::from_secs(30));
    let mut host = Host::start(sample.options(&sms));
    let phone = "+14255550206";
    let id = sample.start(&host, phone, 300);
    let code = sms.code_sent_to(phone);
    host.restart(); // kill -9 while the provider has not answered yet
    wait_until("the re-run to repeat the send", WAIT, || {
        (sms.wait_messages_to(phone, 1)[0]["requests"] == 2).then_some(())
    });
    let status = host.answer_code(&id, code);
    assert_eq!(status["runtimeStatus"], "Completed");
    assert_eq!(status["output"], json!(true), "{status}");
    let sent = sms.wait_messages_to(phone, 1);
    assert_eq!(sent.len(), 1, "one SMS delivered: {sent:?}");
}

fn an_acknowledged_event_survives_kill_9_before_it_is_handled(sample: PhoneSample) {
    let sms = FakeSms::start();
    let mut host = Host::start(sample.options(&sms));
    let id = sample.start(&host, "+14255550202", 300);
    // The person answers as soon as the SMS arrives, maybe before the flow
    // committed its SMS step: a crash in between re-runs the send with the
    // same code.
    let code = sms.code_sent_to("+14255550202");
    // 202 means committed: killing the host right after must not lose it.
    assert_eq!(
        host.raise(&id, "SmsChallengeResponse", &code.to_string())
            .status,
        202
    );
    host.restart();
    assert_eq!(host.wait_finished(&id)["output"], json!(true));
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[test]
fn a_timer_that_fell_due_while_the_host_was_down_fires_after_restart() {
    let sms = FakeSms::start();
    let mut host = Host::start(HostOptions::default().twilio(&sms));
    let input = json!({"phoneNumber": "+14255550203", "timeoutSeconds": 2}).to_string();
    let id = host.start_orchestration("E4_SmsPhoneVerification", &input);
    host.wait_history(&id, "TimerCreated", 1);
    host.kill9();
    // The timer is due 2 s after the SMS step; let that moment pass while
    // the host is down.
    let down_since = now_ms();
    wait_until("the timer to fall due while the host is down", WAIT, || {
        (now_ms() > down_since + 2_500).then_some(())
    });
    host.restart();
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed");
    assert_eq!(status["output"], json!(false));
}

#[test]
fn timers_beyond_the_in_memory_horizon_fire_also_across_a_restart() {
    // A 1 s horizon: timers 3 s and 5 s out start in the database only and
    // reach memory as the horizon moves on (the second one after a restart).
    let mut host = Host::start(HostOptions::default().arg("--timer-horizon-ms").arg("1000"));
    let now = now_ms();
    let early = host.start_orchestration("SleepUntil", &(now + 3_000).to_string());
    let late = host.start_orchestration("SleepUntil", &(now + 5_000).to_string());
    host.wait_history(&late, "TimerCreated", 1);
    assert_eq!(host.wait_finished(&early)["runtimeStatus"], "Completed");
    host.restart();
    assert_eq!(host.wait_finished(&late)["runtimeStatus"], "Completed");
    assert!(now_ms() >= now + 5_000, "the timer fired before it was due");
}

/// Runs wrong-then-right answers and returns (output, history event types).
fn wrong_then_right(
    sample: PhoneSample,
    host: &Host,
    sms: &FakeSms,
    phone: &str,
) -> (Value, Vec<String>) {
    let id = sample.start(host, phone, 300);
    let code = sms.code_sent_to(phone);
    // Answer once the flow waits, so both runs see the same order.
    host.wait_history(&id, "TimerCreated", 1);
    host.raise(
        &id,
        "SmsChallengeResponse",
        &((code + 7) % 10_000).to_string(),
    );
    host.wait_history(&id, "EventRaised", 1);
    host.raise(&id, "SmsChallengeResponse", &code.to_string());
    let status = host.wait_finished(&id);
    let kinds = host.history_kinds(&id);
    (status["output"].clone(), kinds)
}

fn hot_path_and_cold_replay_give_the_same_result(sample: PhoneSample) {
    let sms = FakeSms::start();
    let hot = Host::start(sample.options(&sms));
    let cold = Host::start(sample.options(&sms).cold());
    let hot_run = wrong_then_right(sample, &hot, &sms, "+14255550204");
    let cold_run = wrong_then_right(sample, &cold, &sms, "+14255550205");
    assert_eq!(hot_run.0, json!(true));
    assert_eq!(hot_run, cold_run);
}

#[test]
fn a_rust_replay_takes_one_call() {
    replay_takes_one_call("test_guests", "Collect");
}

#[test]
fn a_javascript_replay_takes_one_call() {
    replay_takes_one_call("test_guests_js", "JsCollect");
}

#[test]
fn a_python_replay_takes_one_call() {
    replay_takes_one_call("test_guests_py", "PyCollect");
}

/// With no hot instances every episode first replays the instance's
/// history into a guest. The SDKs take it by `advance` inside the `start`
/// call, so the only resumes are those for the new events, one an episode.
fn replay_takes_one_call(app: &'static str, orchestrator: &str) {
    let host = Host::start(HostOptions::with_apps(&[app]).cold());
    let ticks = 5;
    let id = host.start_orchestration(orchestrator, &format!("[{ticks}, 0]"));
    assert_eq!(collect_cold(&host, &id, ticks), (1 + ticks, ticks));
}

#[test]
fn a_guest_that_never_advances_is_resumed_once_per_event() {
    // The Python test app does not advance instances named so: as a guest
    // built before `advance` existed, which the host must still replay.
    let host = Host::start(HostOptions::with_apps(&["test_guests_py"]).cold());
    let ticks = 5;
    let started = host.call(
        "POST",
        "/api/orchestrators/PyCollect/no-advance-1",
        Some(&format!("[{ticks}, 0]")),
    );
    assert_eq!(started.status, 202, "{}", started.text);
    // Episode k replays k - 1 events, one resume each, then takes its own:
    // 0 + 1 + 2 + 3 + 4 resumes for history, 5 for the ticks.
    assert_eq!(collect_cold(&host, "no-advance-1", ticks), (1 + ticks, 15));
}

/// Raises `ticks` Tick events on a Collect instance one episode at a time,
/// then answers the orchestrator calls the host made: (starts, resumes).
fn collect_cold(host: &Host, id: &str, ticks: usize) -> (usize, usize) {
    host.wait_history(id, "ExecutionStarted", 1);
    for tick in 1..=ticks {
        let raised = host.raise(id, "Tick", "null");
        assert_eq!(raised.status, 202, "{}", raised.text);
        host.wait_history(id, "EventRaised", tick);
    }
    let status = host.wait_finished(id);
    assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    assert_eq!(status["output"], ticks);
    let calls = |export: &str| {
        host.metric(&format!(
            "durango_orchestrator_calls_total{{export=\"{export}\"}}"
        )) as usize
    };
    // The new instance's start, then one replaying start an episode.
    (calls("start"), calls("resume"))
}

#[test]
fn std_clock_and_randomness_replay_identically() {
    // A Rust guest is never reused: std keeps its HashMap keys, drawn once.
    clock_and_randomness_replay_identically("test_guests", "StdClockAndRandom", false);
}

#[test]
fn javascript_clock_and_randomness_replay_identically() {
    // Date.now(), new Date(), Math.random(), crypto.getRandomValues().
    clock_and_randomness_replay_identically("test_guests_js", "JsClockAndRandom", true);
}

#[test]
fn python_clock_and_randomness_replay_identically() {
    // time.time(), datetime.now(), random.random().
    clock_and_randomness_replay_identically("test_guests_py", "PyClockAndRandom", true);
}

/// The orchestrator reads its language's own clock and randomness before
/// and after an event, and says what it saw first in its custom status.
/// Each reading starts with the clock in milliseconds: the event is raised
/// once the wall clock is past the first reading, so the episode it starts
/// must read a later clock (the clock follows history, it does not stand
/// still). Two instances run one after the other: the second starts in the
/// guest the first ended in when the app allows reuse (`reused`), and must
/// see what a fresh guest sees.
fn clock_and_randomness_replay_identically(app: &'static str, orchestrator: &str, reused: bool) {
    // No hot instances: the episode after the event replays the first one
    // cold, in a fresh guest, and must see the clock and randomness the
    // first run saw.
    let host = Host::start(HostOptions::with_apps(&[app]).cold());
    const REUSES: &str = r#"durango_guest_reuses_total{role="orchestrator"}"#;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let id = host.start_orchestration(orchestrator, "null");
        let seen = wait_until("the first run's values", WAIT, || {
            host.status(&id).body["customStatus"]
                .as_str()
                .map(str::to_string)
        });
        let seen_ms = clock_millis(&seen);
        wait_until("the wall clock to pass the first reading", WAIT, || {
            (now_ms() > seen_ms + 1).then_some(())
        });
        host.raise(&id, "Continue", "\"go\"");
        let status = host.wait_finished(&id);
        assert_eq!(status["runtimeStatus"], "Completed", "{status}");
        let output = status["output"].as_str().unwrap().to_string();
        let Some(later) = output.strip_prefix(&format!("{seen} ")) else {
            panic!("the replay saw what the first run saw ({seen}): {output}");
        };
        assert_ne!(later, seen, "later values are new ones");
        assert!(
            clock_millis(later) > seen_ms,
            "the clock moved with history: {seen} then {later}"
        );
        runs.push(seen);
    }
    assert_ne!(runs[0], runs[1], "each instance draws its own values");
    // The first instance ended in the guest of its replay; the second
    // started in it.
    let expected = if reused { 1.0 } else { 0.0 };
    assert_eq!(host.metric(REUSES), expected, "orchestrator guests reused");
}

/// The clock reading a `ClockAndRandom` orchestrator put first.
fn clock_millis(reading: &str) -> u128 {
    let first = reading.split('/').next().unwrap_or_default();
    first
        .parse()
        .unwrap_or_else(|_| panic!("a clock in milliseconds first: {reading}"))
}

#[test]
fn a_sequence_killed_in_the_middle_finishes_after_restart() {
    let mut host = Host::start(HostOptions::default());
    let id = host.start_orchestration("SlowHello", "500");
    host.wait_history(&id, "TaskCompleted", 1);
    host.restart(); // kill -9 with Seattle's call under way
    let status = host.wait_finished(&id);
    assert_eq!(
        status["output"],
        json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])
    );
    let kinds = host.history_kinds(&id);
    let completed = kinds.iter().filter(|k| *k == "TaskCompleted").count();
    assert_eq!(completed, 3, "each step once in history: {kinds:?}");
}
