//! The Durable Functions phone-verification sample, end to end: the real
//! host, a real SQLite file, the real component, SMS through a fake Twilio.
//! Each scenario runs against the sample in every language it is written
//! in: the same test code, one test per language.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine as _;
use durango_e2e::{
    in_every_language, request, wait_until, Answer, FakeSms, Host, HostOptions, PhoneSample,
    TWILIO_FROM, TWILIO_SID, TWILIO_TOKEN, WAIT,
};
use serde_json::{json, Value};

in_every_language!(
    the_right_code_verifies_the_phone,
    the_code_may_be_sent_as_a_string_and_the_input_as_a_plain_number,
    four_wrong_codes_fail_the_verification,
    wrong_codes_then_the_right_one_verifies,
    no_answer_before_the_timer_fails_the_verification,
    the_timeout_defaults_to_the_setting,
    event_names_match_case_sensitively,
    terminate_stops_a_waiting_verification,
    the_secret_token_never_shows,
    an_answer_raised_with_a_timeout_gets_its_outcome_in_the_same_request,
    a_raise_whose_wait_runs_out_answers_202_and_the_event_is_still_handled,
    an_instance_started_again_under_its_id_sends_under_a_new_idempotency_token,
);

fn the_right_code_verifies_the_phone(sample: PhoneSample) {
    let sms = FakeSms::start();
    let host = Host::start(sample.options(&sms));
    let id = sample.start(&host, "+14255550101", 300);

    let code = sms.code_sent_to("+14255550101");
    let message = &sms.messages()[0];
    assert_eq!(message["from"], TWILIO_FROM);
    assert_eq!(
        message["auth_user"], TWILIO_SID,
        "basic auth carries the account SID"
    );
    assert_eq!(message["account_sid"], TWILIO_SID);
    // Instance id, execution, step: the first step of this execution.
    let token = message["idempotency_token"].as_str().unwrap();
    assert!(
        token.starts_with(&format!("{id}:")) && token.ends_with(":0"),
        "{token}"
    );
    assert!((0..10_000).contains(&code));

    assert_eq!(host.status(&id).status, 202, "running instances answer 202");
    let status = host.answer_code(&id, code);
    assert_eq!(status["runtimeStatus"], "Completed");
    assert_eq!(status["output"], json!(true));
    assert_eq!(status["input"]["phoneNumber"], "+14255550101");
    assert_eq!(status["name"], sample.orchestrator);
}

fn the_code_may_be_sent_as_a_string_and_the_input_as_a_plain_number(sample: PhoneSample) {
    let sms = FakeSms::start();
    let host = Host::start(sample.options(&sms));
    let id = host.start_orchestration(sample.orchestrator, "\"+14255550102\"");
    let code = sms.code_sent_to("+14255550102");
    host.raise(&id, "SmsChallengeResponse", &format!("\"{code:04}\""));
    let status = host.wait_finished(&id);
    assert_eq!(status["output"], json!(true));
    assert_eq!(status["input"], "+14255550102");
}

fn wrong(code: u32, offset: u32) -> u32 {
    (code + offset) % 10_000
}

fn four_wrong_codes_fail_the_verification(sample: PhoneSample) {
    let sms = FakeSms::start();
    let host = Host::start(sample.options(&sms));
    let id = sample.start(&host, "+14255550103", 300);
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

fn wrong_codes_then_the_right_one_verifies(sample: PhoneSample) {
    let sms = FakeSms::start();
    let host = Host::start(sample.options(&sms));
    let id = sample.start(&host, "+14255550104", 300);
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

fn no_answer_before_the_timer_fails_the_verification(sample: PhoneSample) {
    let sms = FakeSms::start();
    let host = Host::start(sample.options(&sms));
    let id = sample.start(&host, "+14255550105", 1);
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

fn the_timeout_defaults_to_the_setting(sample: PhoneSample) {
    let sms = FakeSms::start();
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.toml");
    std::fs::write(&settings, "SmsChallengeTimeoutSeconds = 1\n").unwrap();
    let host = Host::start(
        sample
            .options(&sms)
            .arg("--settings")
            .arg(settings.to_str().unwrap()),
    );
    let id = host.start_orchestration(sample.orchestrator, "\"+14255550106\"");
    // With the 90 s default this wait would run out; the setting makes it 1 s.
    let status = host.wait_finished(&id);
    assert_eq!(status["output"], json!(false));
}

fn event_names_match_case_sensitively(sample: PhoneSample) {
    let sms = FakeSms::start();
    let host = Host::start(sample.options(&sms));
    let id = sample.start(&host, "+14255550107", 300);
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
    // The answer arrives while a slow activity still runs, before the
    // orchestrator reaches its wait: it must be kept for the wait.
    let host = Host::start(HostOptions::default());
    let id = host.start_orchestration("WaitAfterSlowStep", "2000");
    assert_eq!(host.raise(&id, "Early", "\"kept\"").status, 202);
    let status = host.wait_finished(&id);
    assert_eq!(status["output"], json!("kept"));
    let kinds = host.history_kinds(&id);
    let raised = kinds.iter().position(|k| k == "EventRaised");
    let step_done = kinds.iter().position(|k| k == "TaskCompleted");
    assert!(
        raised < step_done,
        "the event came before the activity finished, so before the wait: {kinds:?}"
    );
}

fn terminate_stops_a_waiting_verification(sample: PhoneSample) {
    let sms = FakeSms::start();
    let host = Host::start(sample.options(&sms));
    let id = sample.start(&host, "+14255550108", 300);
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

fn the_secret_token_never_shows(sample: PhoneSample) {
    let sms = FakeSms::start();
    let host = Host::start(sample.options(&sms));
    let id = sample.start(&host, "+14255550109", 300);
    let code = sms.code_sent_to("+14255550109");
    host.raise(&id, "SmsChallengeResponse", &code.to_string());
    host.wait_finished(&id);
    let status = host.status_with_history(&id).text;
    assert!(!status.contains(durango_e2e::TWILIO_TOKEN));
    let database = String::from_utf8_lossy(&host.dump_database()).into_owned();
    // The search sees what the host stored, or it proves nothing.
    assert!(
        database.contains("+14255550109"),
        "the input is in the dump"
    );
    assert!(
        !database.contains(durango_e2e::TWILIO_TOKEN),
        "the token reached the database"
    );
    assert!(!host.log().contains(durango_e2e::TWILIO_TOKEN));
    let messages: Vec<Value> = sms.messages();
    assert!(!serde_json::to_string(&messages)
        .unwrap()
        .contains(durango_e2e::TWILIO_TOKEN));
}

/// Raises the person's answer and waits (up to `seconds`) for its effect.
fn answer_and_wait(host: &Host, id: &str, code: &str, seconds: u32) -> Answer {
    host.call(
        "POST",
        &format!(
            "/runtime/webhooks/durabletask/instances/{id}/raiseEvent/SmsChallengeResponse?timeout={seconds}"
        ),
        Some(code),
    )
}

fn an_answer_raised_with_a_timeout_gets_its_outcome_in_the_same_request(sample: PhoneSample) {
    let sms = FakeSms::start();
    let host = Host::start(sample.options(&sms));
    let id = sample.start(&host, "+14255550110", 300);
    let code = sms.code_sent_to("+14255550110");
    // The answer comes once the flow waits for it: an event raised while the
    // SMS result is still on its way is only buffered by that episode, and
    // the wait that takes it commits later.
    host.wait_history(&id, "TaskCompleted", 1);
    for tries_left in [3, 2] {
        let wrong_answer = answer_and_wait(&host, &id, &wrong(code, tries_left).to_string(), 30);
        assert_eq!(wrong_answer.status, 200, "{}", wrong_answer.text);
        assert_eq!(wrong_answer.body["runtimeStatus"], "Running");
        assert_eq!(
            wrong_answer.body["customStatus"],
            json!({ "triesLeft": tries_left })
        );
    }
    let right = answer_and_wait(&host, &id, &code.to_string(), 30);
    assert_eq!(right.status, 200, "{}", right.text);
    assert_eq!(right.body["runtimeStatus"], "Completed");
    assert_eq!(right.body["output"], json!(true));
    assert_eq!(right.body["instanceId"], id.as_str());
    // Finished: nobody will read another answer.
    assert_eq!(
        answer_and_wait(&host, &id, &code.to_string(), 30).status,
        410
    );
    let bad = answer_and_wait(&host, &id, "1", 999_999);
    assert_eq!(bad.status, 400, "{}", bad.text);
}

fn a_raise_whose_wait_runs_out_answers_202_and_the_event_is_still_handled(sample: PhoneSample) {
    let sms = FakeSms::start();
    let host = Host::start(sample.options(&sms));
    let id = sample.start(&host, "+14255550111", 300);
    let code = sms.code_sent_to("+14255550111");
    let control = |operation: &str| {
        let path = format!("/runtime/webhooks/durabletask/instances/{id}/{operation}");
        assert_eq!(host.call("POST", &path, None).status, 202);
    };
    // A suspended instance holds the event: its effect cannot come in time.
    control("suspend");
    wait_until("the instance to be suspended", WAIT, || {
        (host.status(&id).body["runtimeStatus"] == "Suspended").then_some(())
    });
    let asked = Instant::now();
    let answer = answer_and_wait(&host, &id, &code.to_string(), 1);
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert!(asked.elapsed() >= Duration::from_secs(1), "it waited");
    control("resume");
    assert_eq!(host.wait_finished(&id)["output"], json!(true));
}

#[test]
fn the_twilio_stand_in_sends_once_per_idempotency_token_and_wants_content_length() {
    let sms = FakeSms::start();
    let url = format!(
        "{}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json",
        sms.base
    );
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{TWILIO_SID}:{TWILIO_TOKEN}"))
    );
    let send = |token: &str, body: &str| {
        let form = format!("To=%2B14255550112&From=%2B15005550006&Body={body}");
        request(
            "POST",
            &url,
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/x-www-form-urlencoded"),
                ("i-twilio-idempotency-token", token),
            ],
            Some(form.as_bytes()),
        )
    };
    let first = send("t-1", "one");
    let repeated = send("t-1", "two");
    assert_eq!((first.status, repeated.status), (201, 201));
    assert_eq!(repeated.body, first.body, "the first message again");
    assert_eq!(repeated.body["body"], "one");
    let other = send("t-2", "three");
    assert_ne!(other.body["sid"], first.body["sid"]);
    let messages = sms.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["requests"], 2);

    // A chunked body (no Content-Length) is refused, as gateways do.
    let address = sms.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    let body = "To=%2B1&From=%2B2&Body=x";
    write!(
        stream,
        "POST /2010-04-01/Accounts/{TWILIO_SID}/Messages.json HTTP/1.1\r\nhost: {address}\r\n\
         authorization: {auth}\r\ncontent-type: application/x-www-form-urlencoded\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    assert_eq!(sms.messages().len(), 2);
}

fn an_instance_started_again_under_its_id_sends_under_a_new_idempotency_token(sample: PhoneSample) {
    // A provider that deduplicates on the token would drop the second
    // challenge if the key were the same: the person would get no code.
    let sms = FakeSms::start();
    let host = Host::start(sample.options(&sms));
    let phone = "+14255550113";
    let input = json!({ "phoneNumber": phone, "timeoutSeconds": 300 }).to_string();
    let path = format!(
        "/runtime/webhooks/durabletask/orchestrators/{}/again-1",
        sample.orchestrator
    );
    assert_eq!(host.call("POST", &path, Some(&input)).status, 202);
    sms.wait_messages_to(phone, 1);
    host.start_again_under_its_id("again-1");
    let sent = sms.wait_messages_to(phone, 2);
    assert_ne!(sent[0]["idempotency_token"], sent[1]["idempotency_token"]);
    assert_eq!(sent[1]["requests"], 1);
}
