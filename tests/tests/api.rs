//! The HTTP API's codes and bodies, as Durable Functions' webhook API.

use durango_e2e::{request, wasm, Host, HostOptions, KEY};
use serde_json::json;

const PREFIX: &str = "/runtime/webhooks/durabletask";

fn hello_host() -> Host {
    Host::start(HostOptions::with_apps(&["hello_sequence", "test_guests"]))
}

#[test]
fn start_answers_with_the_check_status_payload() {
    let host = hello_host();
    let answer = host.call("POST", "/api/orchestrators/E1_HelloSequence/my-id-1", None);
    assert_eq!(answer.status, 202, "{}", answer.text);
    let body = &answer.body;
    assert_eq!(body["id"], "my-id-1");
    let status_uri = body["statusQueryGetUri"].as_str().unwrap();
    assert_eq!(answer.header("location"), Some(status_uri));
    assert!(answer.header("retry-after").is_some());
    assert!(status_uri.starts_with(&format!("{}{PREFIX}/instances/my-id-1?", host.base)));
    assert!(status_uri.contains(&format!("code={KEY}")));
    for field in [
        "sendEventPostUri",
        "terminatePostUri",
        "purgeHistoryDeleteUri",
        "restartPostUri",
        "suspendPostUri",
        "resumePostUri",
    ] {
        assert!(body[field].as_str().unwrap().contains("my-id-1"), "{field}");
    }
    assert!(body["sendEventPostUri"]
        .as_str()
        .unwrap()
        .contains("/raiseEvent/{eventName}"));
    // The handed-out URL works as it is, key included.
    let status = durango_e2e::wait_until("completion", durango_e2e::WAIT, || {
        let a = request("GET", status_uri, &[], None);
        (a.status == 200).then_some(a)
    });
    assert_eq!(status.body["runtimeStatus"], "Completed");
    assert_eq!(status.body["instanceId"], "my-id-1");
    assert!(status.body["createdTime"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn the_prefixed_start_route_works_too() {
    let host = hello_host();
    let answer = host.call(
        "POST",
        &format!("{PREFIX}/orchestrators/E1_HelloSequence"),
        Some("null"),
    );
    assert_eq!(answer.status, 202, "{}", answer.text);
    let id = answer.body["id"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(host.wait_finished(id)["runtimeStatus"], "Completed");
}

#[test]
fn starting_a_running_id_conflicts_and_a_finished_one_restarts() {
    let host = hello_host();
    let first = host.call(
        "POST",
        "/api/orchestrators/EchoAfterEvent/dup",
        Some("\"Go\""),
    );
    assert_eq!(first.status, 202);
    let second = host.call(
        "POST",
        "/api/orchestrators/EchoAfterEvent/dup",
        Some("\"Go\""),
    );
    assert_eq!(second.status, 409, "{}", second.text);
    assert!(second.body["error"].as_str().unwrap().contains("dup"));
    host.raise("dup", "Go", "\"x\"");
    assert_eq!(host.wait_finished("dup")["output"], json!("x"));
    let third = host.call(
        "POST",
        "/api/orchestrators/EchoAfterEvent/dup",
        Some("\"Go\""),
    );
    assert_eq!(third.status, 202);
    assert_eq!(
        host.status("dup").body["output"],
        json!(null),
        "a fresh run replaced the finished one"
    );
}

#[test]
fn bad_requests_get_clear_4xx_errors() {
    let host = hello_host();
    let cases = [
        (
            "POST",
            "/api/orchestrators/E1_HelloSequence".to_string(),
            Some("{not json"),
            400,
        ),
        (
            "POST",
            "/api/orchestrators/NoSuchThing".to_string(),
            None,
            400,
        ),
        (
            "POST",
            format!("/api/orchestrators/E1_HelloSequence/{}", "x".repeat(101)),
            None,
            400,
        ),
        ("GET", format!("{PREFIX}/instances/unknown-id"), None, 404),
        (
            "POST",
            format!("{PREFIX}/instances/unknown-id/raiseEvent/E"),
            Some("1"),
            404,
        ),
        (
            "POST",
            format!("{PREFIX}/instances/unknown-id/terminate"),
            None,
            404,
        ),
        (
            "DELETE",
            format!("{PREFIX}/instances/unknown-id"),
            None,
            404,
        ),
        ("GET", "/no/such/route".to_string(), None, 404),
        (
            "GET",
            format!("{PREFIX}/instances?runtimeStatus=Sleeping"),
            None,
            400,
        ),
    ];
    for (method, path, body, expected) in cases {
        let answer = host.call(method, &path, body);
        assert_eq!(answer.status, expected, "{method} {path}: {}", answer.text);
        assert!(
            answer.body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: {}",
            answer.text
        );
    }
}

#[test]
fn raising_with_invalid_json_is_refused_and_finished_instances_answer_410() {
    let host = hello_host();
    let id = host.start_orchestration("EchoAfterEvent", "\"Go\"");
    assert_eq!(host.raise(&id, "Go", "{oops").status, 400);
    host.raise(&id, "Go", "\"done\"");
    host.wait_finished(&id);
    let gone = host.raise(&id, "Go", "1");
    assert_eq!(gone.status, 410);
    assert!(gone.body["error"].as_str().unwrap().contains("Completed"));
}

#[test]
fn every_route_needs_the_system_key() {
    let host = hello_host();
    let paths = [
        ("POST", "/api/orchestrators/E1_HelloSequence".to_string()),
        ("GET", format!("{PREFIX}/instances/x")),
        ("GET", format!("{PREFIX}/instances")),
        ("POST", format!("{PREFIX}/instances/x/raiseEvent/E")),
        ("PUT", "/admin/apps/x".to_string()),
        ("GET", "/unknown".to_string()),
    ];
    for (method, path) in paths {
        let none = request(method, &host.url(&path), &[], Some(b"1"));
        assert_eq!(none.status, 401, "{method} {path} without a key");
        assert!(none.body["error"].is_string());
        let wrong = request(
            method,
            &host.url(&format!("{path}?code=wrong")),
            &[],
            Some(b"1"),
        );
        assert_eq!(wrong.status, 401, "{method} {path} with a wrong key");
    }
    let by_query = request(
        "GET",
        &host.url(&format!("{PREFIX}/instances?code={KEY}")),
        &[],
        None,
    );
    assert_eq!(by_query.status, 200);
}

#[test]
fn list_filters_and_pages() {
    let host = hello_host();
    let ids: Vec<String> = (0..5)
        .map(|i| {
            let answer = host.call(
                "POST",
                &format!("/api/orchestrators/EchoAfterEvent/page-{i}"),
                Some("\"Go\""),
            );
            assert_eq!(answer.status, 202);
            answer.body["id"].as_str().unwrap().to_string()
        })
        .collect();
    host.raise(&ids[0], "Go", "\"a\"");
    host.wait_finished(&ids[0]);

    let running = host.call(
        "GET",
        &format!("{PREFIX}/instances?runtimeStatus=Running,Pending"),
        None,
    );
    assert_eq!(running.status, 200);
    assert_eq!(running.body.as_array().unwrap().len(), 4);

    let mut seen = every_page(&host, "instanceIdPrefix=page-&top=2");
    seen.sort();
    assert_eq!(seen, ids);

    // The dashboard's list: newest first, one orchestrator's.
    host.start_orchestration("E1_HelloSequence", "");
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(
        every_page(&host, "name=EchoAfterEvent&newestFirst=true&top=2"),
        newest_first
    );
    assert_eq!(every_page(&host, "name=E1_HelloSequence").len(), 1);
    assert_eq!(
        every_page(&host, "name=NoSuchOrchestrator"),
        Vec::<String>::new()
    );
}

/// The ids of every page of the list with `query`, following the
/// continuation tokens.
fn every_page(host: &Host, query: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut headers = vec![("x-functions-key", KEY)];
        if let Some(t) = &token {
            headers.push(("x-ms-continuation-token", t.as_str()));
        }
        let page = request(
            "GET",
            &host.url(&format!("{PREFIX}/instances?{query}")),
            &headers,
            None,
        );
        assert_eq!(page.status, 200, "{}", page.text);
        seen.extend(
            page.body
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["instanceId"].as_str().unwrap().to_string()),
        );
        match page.header("x-ms-continuation-token") {
            Some(next) => token = Some(next.to_string()),
            None => return seen,
        }
    }
}

#[test]
fn purge_deletes_an_instance() {
    let host = hello_host();
    let id = host.start_orchestration("E1_HelloSequence", "");
    host.wait_finished(&id);
    let purged = host.call("DELETE", &format!("{PREFIX}/instances/{id}"), None);
    assert_eq!(purged.status, 200);
    assert_eq!(purged.body, json!({"instancesDeleted": 1}));
    assert_eq!(host.status(&id).status, 404);
}

#[test]
fn deploy_checks_the_component() {
    let host = hello_host();
    let url = host.url("/admin/apps/broken");
    let not_wasm = request("PUT", &url, &[("x-functions-key", KEY)], Some(b"hello"));
    assert_eq!(not_wasm.status, 400);
    assert!(not_wasm.body["error"]
        .as_str()
        .unwrap()
        .contains("not a valid WebAssembly component"));

    // A core module, not a component of a Durango world.
    let core_module = b"\0asm\x01\0\0\0";
    let wrong_world = request("PUT", &url, &[("x-functions-key", KEY)], Some(core_module));
    assert_eq!(wrong_world.status, 400, "{}", wrong_world.text);

    let bad_name = request(
        "PUT",
        &host.url("/admin/apps/bad%20name"),
        &[("x-functions-key", KEY)],
        Some(b"x"),
    );
    assert_eq!(bad_name.status, 400);

    let bytes = std::fs::read(wasm("phone_verification")).unwrap();
    let deployed = request(
        "PUT",
        &host.url("/admin/apps/phones"),
        &[("x-functions-key", KEY)],
        Some(&bytes),
    );
    assert_eq!(deployed.status, 201, "{}", deployed.text);
    assert_eq!(deployed.body["app"], "phones");
    assert_eq!(deployed.body["version"].as_str().unwrap().len(), 64);
    let functions = deployed.body["functions"].as_array().unwrap();
    assert!(functions.contains(&json!({"name": "E4_SmsPhoneVerification", "kind": "orchestrator"})));
    assert!(functions.contains(&json!({"name": "E4_SendSmsChallenge", "kind": "activity"})));
}
