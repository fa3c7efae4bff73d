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
    let with_history = host.status_with_history(&id).text;
    let listed = host
        .call("GET", "/runtime/webhooks/durabletask/instances", None)
        .text;
    let db = std::fs::read(host.db()).unwrap();
    let wal = std::fs::read(host.db().with_extension("db-wal")).unwrap_or_default();
    for (place, text) in [
        ("status", with_history),
        ("list", listed),
        ("log", host.log()),
        ("database", String::from_utf8_lossy(&db).into_owned()),
        ("WAL", String::from_utf8_lossy(&wal).into_owned()),
    ] {
        assert!(!text.contains(LEAKY), "the secret reached the {place}");
    }
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
