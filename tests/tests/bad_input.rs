//! Bad requests get a 4xx with `{"error": ...}` that says what was wrong;
//! never a 5xx.

use durango_e2e::{request, Host, HostOptions, KEY};

const PREFIX: &str = "/runtime/webhooks/durabletask";

fn host() -> Host {
    Host::start(
        HostOptions {
            apps: vec!["test_guests"],
            ..HostOptions::default()
        }
        .arg("--max-body")
        .arg("1024"),
    )
}

fn send(
    host: &Host,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> durango_e2e::Answer {
    let mut headers = vec![("x-functions-key", KEY)];
    if let Some(content_type) = content_type {
        headers.push(("content-type", content_type));
    }
    request(method, &host.url(path), &headers, Some(body))
}

fn assert_error(answer: &durango_e2e::Answer, status: u16, mentions: &str) {
    assert_eq!(answer.status, status, "{}", answer.text);
    let message = answer.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error: {}", answer.text));
    assert!(
        message.to_lowercase().contains(&mentions.to_lowercase()),
        "{message:?} should mention {mentions:?}"
    );
}

#[test]
fn wrong_content_types_oversized_bodies_and_methods_are_refused_clearly() {
    let host = host();
    let id = host.start_orchestration("EchoAfterEvent", "\"Go\"");
    let raise = format!("{PREFIX}/instances/{id}/raiseEvent/Go");
    assert_error(
        &send(&host, "POST", &raise, Some("text/plain"), b"\"x\""),
        415,
        "application/json",
    );
    assert_error(
        &send(
            &host,
            "POST",
            "/api/orchestrators/EchoAfterEvent",
            Some("application/x-www-form-urlencoded"),
            b"a=1",
        ),
        415,
        "application/json",
    );
    let big = format!("\"{}\"", "x".repeat(2048));
    assert_error(
        &send(
            &host,
            "POST",
            &raise,
            Some("application/json"),
            big.as_bytes(),
        ),
        413,
        "limit",
    );
    assert_error(
        &send(
            &host,
            "DELETE",
            "/api/orchestrators/EchoAfterEvent",
            None,
            b"",
        ),
        405,
        "not allowed",
    );
    assert_error(
        &send(
            &host,
            "GET",
            &format!("{PREFIX}/instances/%FF%FE"),
            None,
            b"",
        ),
        400,
        "",
    );
    assert_error(
        &send(
            &host,
            "GET",
            &format!("{PREFIX}/instances?top=many"),
            None,
            b"",
        ),
        400,
        "top",
    );
    assert_error(
        &send(
            &host,
            "GET",
            &format!("{PREFIX}/instances?createdTimeFrom=yesterday"),
            None,
            b"",
        ),
        400,
        "createdTimeFrom",
    );
    // The instance is untouched by all that.
    assert_eq!(host.raise(&id, "Go", "\"fine\"").status, 202);
    assert_eq!(host.wait_finished(&id)["output"], "fine");
}

#[test]
fn a_json_body_without_a_content_type_is_accepted() {
    let host = host();
    let answer = send(
        &host,
        "POST",
        "/api/orchestrators/EchoAfterEvent",
        None,
        b"\"Go\"",
    );
    assert_eq!(answer.status, 202, "{}", answer.text);
    let charset = send(
        &host,
        "POST",
        "/api/orchestrators/EchoAfterEvent",
        Some("application/json; charset=utf-8"),
        b"\"Go\"",
    );
    assert_eq!(charset.status, 202, "{}", charset.text);
}
