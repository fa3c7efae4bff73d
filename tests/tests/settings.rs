//! Settings and secrets: secrets never show, and an app reads only the
//! settings its deployment allows.

use std::process::Command;

use durango_e2e::{durango_bin, wasm, FakeSms, Host, HostOptions, KEY};
use serde_json::json;

const LEAKY: &str = "sekrit-value-7c1d";

#[test]
fn a_secret_quoted_in_an_error_is_redacted_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.toml");
    std::fs::write(&settings, format!("[secrets]\nLeakySecret = \"{LEAKY}\"\n")).unwrap();
    let host = Host::start(
        HostOptions::default()
            .arg("--settings")
            .arg(settings.to_str().unwrap()),
    );
    let id = host.start_orchestration("LeaksSecret", "null");
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Failed");
    let message = status["output"].as_str().unwrap();
    assert!(message.contains("rejected token ***"), "{message}");
    assert_nowhere(&host, &[LEAKY]);
}

/// Fails unless every place the host shows or keeps instances is free of
/// every one of `forms`.
fn assert_nowhere(host: &Host, forms: &[&str]) {
    let listed = host.call("GET", "/runtime/webhooks/durabletask/instances", None);
    let histories: Vec<String> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            host.status_with_history(i["instanceId"].as_str().unwrap())
                .text
        })
        .collect();
    let database = host.dump_database();
    for (place, text) in [
        ("status", histories.join("\n")),
        ("list", listed.text),
        ("log", host.log()),
        ("database", String::from_utf8_lossy(&database).into_owned()),
    ] {
        for form in forms {
            assert!(
                !text.contains(form),
                "the secret reached the {place} as {form}"
            );
        }
    }
}

/// Every character that escaping or encoding changes.
const SPECIAL: &str = "p\"a\\ss w+rd/é:&=?%";
const SID: &str = "AC1234";

fn special_secret() -> HostOptions {
    HostOptions::default()
        .env("LeakySid", SID)
        .env("LeakySecret", SPECIAL)
        .env("DURANGO_SECRET_SETTINGS", "LeakySecret")
}

#[test]
fn a_secret_is_redacted_in_every_form_it_travels_in() {
    use base64::Engine as _;
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let host = Host::start(special_secret());
    let id = host.start_orchestration("LeaksSecretForms", "null");
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Failed");
    let message = status["output"].as_str().unwrap();
    assert!(
        message.contains("/tokens/***?token=*** {\"token\":\"***\"}"),
        "{message}"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{SPECIAL}"));
    let json = serde_json::to_string(SPECIAL).unwrap();
    let form: String = form_urlencoded::byte_serialize(SPECIAL.as_bytes()).collect();
    let path = utf8_percent_encode(SPECIAL, NON_ALPHANUMERIC).to_string();
    let forms = [SPECIAL, json.trim_matches('"'), &form, &path, &basic];
    assert_nowhere(&host, &forms);
    // The activity's output, JSON-escaped in history, is redacted too.
    let history = host.status_with_history(&id).body;
    let outputs: Vec<&serde_json::Value> = history["historyEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["EventType"] == "TaskCompleted")
        .map(|e| &e["Result"])
        .collect();
    assert_eq!(outputs, [&json!("***")]);
}

#[test]
fn an_orchestrator_cannot_read_a_secret_setting() {
    let host = Host::start(special_secret());
    let id = host.start_orchestration("ReadsSecret", "null");
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Failed");
    let message = status["output"].as_str().unwrap();
    assert!(
        message.contains("setting LeakySecret is secret: orchestrators may not read it"),
        "{message}"
    );
    assert_nowhere(&host, &[SPECIAL]);
}

fn deploy_with(host: &Host, allow: &[&str]) -> std::process::Output {
    let path = wasm("phone_verification");
    let mut command = Command::new(durango_bin());
    command
        .args(["deploy", path.to_str().unwrap(), "--name", "phones"])
        .env("DURANGO_URL", &host.base)
        .env("DURANGO_KEY", KEY);
    for name in allow {
        command.args(["--allow-setting", name]);
    }
    command.output().unwrap()
}

#[test]
fn an_app_reads_only_the_settings_its_deployment_allows() {
    let sms = FakeSms::start();
    let host = Host::start(HostOptions::with_apps(&[]).twilio(&sms));
    let deployed = deploy_with(
        &host,
        &["TwilioAccountSid", "TwilioPhoneNumber", "TwilioBaseUrl"],
    );
    assert!(deployed.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&deployed.stdout).unwrap();
    assert_eq!(answer["allowedSettings"].as_array().unwrap().len(), 3);
    let input = json!({"phoneNumber": "+14255550301", "timeoutSeconds": 60}).to_string();
    let refused = host.start_orchestration("E4_SmsPhoneVerification", &input);
    let status = host.wait_finished(&refused);
    assert_eq!(status["runtimeStatus"], "Failed");
    let message = status["output"].as_str().unwrap();
    assert!(
        message.contains("TwilioAuthToken is not allowed"),
        "{message}"
    );
    assert!(sms.messages().is_empty());

    let all = [
        "TwilioAccountSid",
        "TwilioAuthToken",
        "TwilioPhoneNumber",
        "TwilioBaseUrl",
    ];
    assert!(deploy_with(&host, &all).status.success());
    let allowed = host.start_orchestration("E4_SmsPhoneVerification", &input);
    let code = sms.code_sent_to("+14255550301");
    host.raise(&allowed, "SmsChallengeResponse", &code.to_string());
    assert_eq!(host.wait_finished(&allowed)["output"], json!(true));
}
