//! The Durable Functions phone-verification sample, end to end: the real
//! host, a real SQLite file, the real component, SMS through a fake Twilio.

use durango_e2e::{FakeSms, Host, HostOptions, TWILIO_FROM, TWILIO_SID};
use serde_json::{json, Value};

fn start(host: &Host, phone: &str, timeout_seconds: u64) -> String {
    let input = json!({ "phoneNumber": phone, "timeoutSeconds": timeout_seconds });
    host.start_orchestration("E4_SmsPhoneVerification", &input.to_string())
}

#[test]
fn the_right_code_verifies_the_phone() {
    let sms = FakeSms::start();
    let host = Host::start(HostOptions::default().twilio(&sms));
    let id = start(&host, "+14255550101", 300);

    let code = sms.code_sent_to("+14255550101");
    let message = &sms.messages()[0];
    assert_eq!(message["from"], TWILIO_FROM);
    assert_eq!(
        message["auth_user"], TWILIO_SID,
        "basic auth carries the account SID"
    );
    assert_eq!(message["account_sid"], TWILIO_SID);
    assert_eq!(message["idempotency_token"], format!("{id}:0"));
    assert!((0..10_000).contains(&code));

    assert_eq!(host.status(&id).status, 202, "running instances answer 202");
    assert_eq!(
        host.raise(&id, "SmsChallengeResponse", &code.to_string())
            .status,
        202
    );
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed");
    assert_eq!(status["output"], json!(true));
    assert_eq!(status["input"]["phoneNumber"], "+14255550101");
    assert_eq!(status["name"], "E4_SmsPhoneVerification");
}

#[test]
fn the_code_may_be_sent_as_a_string_and_the_input_as_a_plain_number() {
    let sms = FakeSms::start();
    let host = Host::start(HostOptions::default().twilio(&sms));
    let id = host.start_orchestration("E4_SmsPhoneVerification", "\"+14255550102\"");
    let code = sms.code_sent_to("+14255550102");
    host.raise(&id, "SmsChallengeResponse", &format!("\"{code:04}\""));
    let status = host.wait_finished(&id);
    assert_eq!(status["output"], json!(true));
    assert_eq!(status["input"], "+14255550102");
}

fn wrong(code: u32, offset: u32) -> u32 {
    (code + offset) % 10_000
}

#[test]
fn four_wrong_codes_fail_the_verification() {
    let sms = FakeSms::start();
    let host = Host::start(HostOptions::default().twilio(&sms));
    let id = start(&host, "+14255550103", 300);
    let code = sms.code_sent_to("+14255550103");
    for attempt in 1..=4 {
        assert_eq!(
            host.raise(
                &id,
                "SmsChallengeResponse",
                &wrong(code, attempt).to_string()
            )
            .status,
            202
        );
    }
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed");
    assert_eq!(status["output"], json!(false));
    // The timer was cancelled when the flow ended: a fifth answer is refused.
    assert_eq!(
        host.raise(&id, "SmsChallengeResponse", &code.to_string())
            .status,
        410
    );
}

#[test]
fn wrong_codes_then_the_right_one_verifies() {
    let sms = FakeSms::start();
    let host = Host::start(HostOptions::default().twilio(&sms));
    let id = start(&host, "+14255550104", 300);
    let code = sms.code_sent_to("+14255550104");
    host.raise(&id, "SmsChallengeResponse", &wrong(code, 1).to_string());
    host.raise(&id, "SmsChallengeResponse", "\"not a number\"");
    host.raise(&id, "SmsChallengeResponse", &wrong(code, 2).to_string());
    host.raise(&id, "SmsChallengeResponse", &code.to_string());
    let status = host.wait_finished(&id);
    assert_eq!(status["output"], json!(true));
    let history = host.status_with_history(&id).body;
    let raised = history["historyEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["EventType"] == "EventRaised")
        .count();
    assert_eq!(raised, 4);
}

#[test]
fn no_answer_before_the_timer_fails_the_verification() {
    let sms = FakeSms::start();
    let host = Host::start(HostOptions::default().twilio(&sms));
    let id = start(&host, "+14255550105", 1);
    sms.code_sent_to("+14255550105");
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed");
    assert_eq!(status["output"], json!(false));
    let kinds = host.history_kinds(&id);
    assert!(
        kinds.iter().any(|k| k == "TimerFired"),
        "history: {kinds:?}"
    );
}

#[test]
fn the_timeout_defaults_to_the_setting() {
    let sms = FakeSms::start();
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.toml");
    std::fs::write(&settings, "SmsChallengeTimeoutSeconds = 1\n").unwrap();
    let host = Host::start(
        HostOptions::default()
            .twilio(&sms)
            .arg("--settings")
            .arg(settings.to_str().unwrap()),
    );
    let id = host.start_orchestration("E4_SmsPhoneVerification", "\"+14255550106\"");
    // With the 90 s default this wait would run out; the setting makes it 1 s.
    let status = host.wait_finished(&id);
    assert_eq!(status["output"], json!(false));
}

#[test]
fn event_names_match_case_sensitively() {
    let sms = FakeSms::start();
    let host = Host::start(HostOptions::default().twilio(&sms));
    let id = start(&host, "+14255550107", 300);
    let code = sms.code_sent_to("+14255550107");
    assert_eq!(
        host.raise(&id, "smschallengeresponse", &code.to_string())
            .status,
        202
    );
    host.wait_history(&id, "EventRaised", 1);
    assert_eq!(host.status(&id).body["runtimeStatus"], "Running");
    host.raise(&id, "SmsChallengeResponse", &code.to_string());
    assert_eq!(host.wait_finished(&id)["output"], json!(true));
}

#[test]
fn an_answer_raised_before_the_wait_is_kept() {
    // The answer arrives while the SMS activity is still running: it must be
    // buffered and consumed by the first wait, not dropped.
    let sms = FakeSms::start();
    let host = Host::start(HostOptions::default().twilio(&sms));
    let id = host.start_orchestration("EchoAfterEvent", "\"Early\"");
    assert_eq!(host.raise(&id, "Early", "\"kept\"").status, 202);
    let status = host.wait_finished(&id);
    assert_eq!(status["output"], json!("kept"));
}

#[test]
fn terminate_stops_a_waiting_verification() {
    let sms = FakeSms::start();
    let host = Host::start(HostOptions::default().twilio(&sms));
    let id = start(&host, "+14255550108", 300);
    sms.code_sent_to("+14255550108");
    let answer = host.call(
        "POST",
        &format!("/runtime/webhooks/durabletask/instances/{id}/terminate?reason=user%20cancelled"),
        None,
    );
    assert_eq!(answer.status, 202);
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Terminated");
    assert_eq!(status["output"], json!("user cancelled"));
    assert_eq!(host.raise(&id, "SmsChallengeResponse", "1").status, 410);
    let again = host.call(
        "POST",
        &format!("/runtime/webhooks/durabletask/instances/{id}/terminate"),
        None,
    );
    assert_eq!(again.status, 410);
}

#[test]
fn the_secret_token_never_shows() {
    let sms = FakeSms::start();
    let host = Host::start(HostOptions::default().twilio(&sms));
    let id = start(&host, "+14255550109", 300);
    let code = sms.code_sent_to("+14255550109");
    host.raise(&id, "SmsChallengeResponse", &code.to_string());
    host.wait_finished(&id);
    let status = host.status_with_history(&id).text;
    assert!(!status.contains(durango_e2e::TWILIO_TOKEN));
    let db = std::fs::read(host.db()).unwrap();
    let wal = std::fs::read(host.db().with_extension("db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(durango_e2e::TWILIO_TOKEN),
            "the token reached the database"
        );
    }
    assert!(!host.log().contains(durango_e2e::TWILIO_TOKEN));
    let messages: Vec<Value> = sms.messages();
    assert!(!serde_json::to_string(&messages)
        .unwrap()
        .contains(durango_e2e::TWILIO_TOKEN));
}
