//! Bad requests get a 4xx with `{"error": ...}` that says what was wrong;
//! never a 5xx.

use durango_e2e::{request, Answer, Host, HostOptions, Raw, KEY};

const PREFIX: &str = "/runtime/webhooks/durabletask";

fn host() -> Host {
    Host::start(
        HostOptions::with_apps(&["test_guests"])
            .arg("--max-body")
            .arg("1024"),
    )
}

fn send(host: &Host, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Answer {
    let mut headers = vec![("x-functions-key", KEY)];
    if let Some(content_type) = content_type {
        headers.push(("content-type", content_type));
    }
    request(method, &host.url(path), &headers, Some(body))
}

fn assert_error(answer: &Answer, status: u16, mentions: &str) {
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
fn a_body_over_the_limit_sent_whole_before_reading_gets_its_413() {
    let host = host();
    // More than the socket buffers hold: the client's writes complete, and
    // the answer arrives, only because the host reads (and drops) the rest
    // of the body after answering.
    let body = format!("\"{}\"", "x".repeat(8 << 20));
    let mut connection = Raw::connect(&host);
    connection.send(
        format!(
            "POST /api/orchestrators/EchoAfterEvent HTTP/1.1\r\nhost: localhost\r\nx-functions-key: {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_error(&connection.answer(), 413, "limit");
    assert!(connection.closed());
    assert_host_answers(&host);
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

/// Sends `bytes` as the only request on a new connection; the answer, and
/// the host must close the connection after it.
fn raw(host: &Host, bytes: &[u8]) -> Answer {
    let mut connection = Raw::connect(host);
    connection.send(bytes);
    let answer = connection.answer();
    assert!(
        connection.closed(),
        "the connection stays open after {}",
        answer.text
    );
    answer
}

fn head(target: &str, fields: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nhost: localhost\r\nx-functions-key: {KEY}\r\n{fields}\r\n")
        .into_bytes()
}

fn assert_host_answers(host: &Host) {
    let list = host.call("GET", &format!("{PREFIX}/instances"), None);
    assert_eq!(list.status, 200, "{}", list.text);
}

#[test]
fn oversized_request_heads_are_refused_with_json_and_the_host_carries_on() {
    let host = host();
    let long_path = format!("{PREFIX}/instances/{}", "p".repeat(100 * 1024));
    assert_error(&raw(&host, &head(&long_path, "")), 414, "request target");
    assert_host_answers(&host);

    // Through an ordinary client too.
    let long_query = format!(
        "{PREFIX}/instances?instanceIdPrefix={}",
        "q".repeat(20 * 1024)
    );
    assert_error(
        &send(&host, "GET", &long_query, None, b""),
        414,
        "request target",
    );
    assert_host_answers(&host);

    let big_field = format!("x-big: {}\r\n", "h".repeat(200 * 1024));
    assert_error(
        &raw(&host, &head(&format!("{PREFIX}/instances"), &big_field)),
        431,
        "request head",
    );
    // More than the socket buffers hold: the answer arrives only because
    // the host reads (and drops) the rest after answering.
    let huge_field = format!("x-big: {}\r\n", "h".repeat(8 << 20));
    assert_error(
        &raw(&host, &head(&format!("{PREFIX}/instances"), &huge_field)),
        431,
        "request head",
    );
    assert_host_answers(&host);

    let many_fields: String = (0..10_000).map(|i| format!("x-field-{i}: v\r\n")).collect();
    assert_error(
        &raw(&host, &head(&format!("{PREFIX}/instances"), &many_fields)),
        431,
        "header fields",
    );
    // Past the count, though well within the size.
    let many_fields: String = (0..101).map(|i| format!("x-field-{i}: v\r\n")).collect();
    assert_error(
        &raw(&host, &head(&format!("{PREFIX}/instances"), &many_fields)),
        431,
        "at most 100 header fields",
    );
    assert_host_answers(&host);
}

#[test]
fn malformed_request_heads_are_refused_with_json() {
    let host = host();
    for (bytes, mentions) in [
        (&b"this is no request\r\n\r\n"[..], "malformed request"),
        (
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            "malformed request",
        ),
        (b"GET / HTTP/3.0\r\n\r\n", "malformed request"),
        (
            b"POST /api/orchestrators/EchoAfterEvent HTTP/1.1\r\ncontent-length: ten\r\n\r\n",
            "content-length",
        ),
        (
            b"POST /api/orchestrators/EchoAfterEvent HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
            "chunked",
        ),
    ] {
        assert_error(&raw(&host, bytes), 400, mentions);
    }
    assert_host_answers(&host);
}

#[test]
fn a_bad_head_after_good_requests_on_one_connection_is_refused_with_json() {
    let host = host();
    let mut connection = Raw::connect(&host);
    // A sized body, then a chunked one: the next head is found after each.
    let start = format!(
        "POST /api/orchestrators/EchoAfterEvent HTTP/1.1\r\nhost: localhost\r\nx-functions-key: {KEY}\r\ncontent-type: application/json\r\ncontent-length: 4\r\n\r\n\"Go\""
    );
    connection.send(start.as_bytes());
    let started = connection.answer();
    assert_eq!(started.status, 202, "{}", started.text);
    let id = started.body["id"].as_str().unwrap().to_string();
    let raise = format!(
        "POST {PREFIX}/instances/{id}/raiseEvent/Go HTTP/1.1\r\nhost: localhost\r\nx-functions-key: {KEY}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n3\r\n\"ok\r\n1\r\n\"\r\n0\r\n\r\n"
    );
    connection.send(raise.as_bytes());
    let raised = connection.answer();
    assert_eq!(raised.status, 202, "{}", raised.text);
    connection.send(&head(&format!("/{}", "p".repeat(100 * 1024)), ""));
    assert_error(&connection.answer(), 414, "request target");
    assert!(connection.closed());
    assert_eq!(host.wait_finished(&id)["output"], "ok");
}
