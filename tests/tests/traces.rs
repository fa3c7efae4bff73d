//! Traces and logs, end to end: the real host exports its spans over
//! OTLP/HTTP (protobuf, the default) to a receiver running in the test on
//! loopback, which decodes them; the fake Twilio records the `traceparent`
//! the SMS request carried. And `--log-format json`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use durango_e2e::{request, wait_until, FakeSms, Host, HostOptions, KEY, WAIT};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message as _;
use serde_json::{json, Value};

/// The caller's span: the trace every span of the instance must be in.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A span as received, ids in hex.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
    events: Vec<(String, HashMap<String, String>)>,
    service: String,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// An OTLP/HTTP receiver: takes `POST /v1/traces` (protobuf), keeps the
/// spans and the content types it was sent.
struct Receiver {
    base: String,
    spans: Arc<Mutex<Vec<Span>>>,
    content_types: Arc<Mutex<Vec<String>>>,
    server: Arc<tiny_http::Server>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

impl Receiver {
    fn start() -> Receiver {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let content_types = Arc::new(Mutex::new(Vec::new()));
        let (srv, kept, types) = (server.clone(), spans.clone(), content_types.clone());
        std::thread::spawn(move || {
            for mut request in srv.incoming_requests() {
                let mut body = Vec::new();
                let _ = request.as_reader().read_to_end(&mut body);
                let content_type = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("content-type"))
                    .map(|h| h.value.to_string())
                    .unwrap_or_default();
                types.lock().unwrap().push(content_type);
                let status = match (request.url(), ExportTraceServiceRequest::decode(&body[..])) {
                    ("/v1/traces", Ok(export)) => {
                        let mut kept = kept.lock().unwrap();
                        for resource in export.resource_spans {
                            let service = resource
                                .resource
                                .as_ref()
                                .map(|r| text(&r.attributes))
                                .and_then(|a| a.get("service.name").cloned())
                                .unwrap_or_default();
                            for scope in resource.scope_spans {
                                for span in scope.spans {
                                    kept.push(Span {
                                        name: span.name,
                                        trace_id: hex(&span.trace_id),
                                        span_id: hex(&span.span_id),
                                        parent: hex(&span.parent_span_id),
                                        attributes: text(&span.attributes),
                                        events: span
                                            .events
                                            .iter()
                                            .map(|e| (e.name.clone(), text(&e.attributes)))
                                            .collect(),
                                        service: service.clone(),
                                    });
                                }
                            }
                        }
                        200
                    }
                    _ => 400,
                };
                let _ = request.respond(tiny_http::Response::empty(status));
            }
        });
        Receiver {
            base: format!("http://127.0.0.1:{port}"),
            spans,
            content_types,
            server,
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of instance `id`, once `enough` holds for them.
    fn wait_for(&self, id: &str, what: &str, enough: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        wait_until(what, WAIT, || {
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| s.attr("instance_id") == Some(id))
                .collect();
            enough(&spans).then_some(spans)
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn traced(receiver: &Receiver, options: HostOptions) -> HostOptions {
    options
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.base)
        // Export each batch a tenth of a second after it starts.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
}

fn named<'a>(spans: &'a [Span], prefix: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.name.starts_with(prefix))
        .collect()
}

/// Every attribute value a span, its events and its resource carry.
fn attribute_values(span: &Span) -> Vec<&str> {
    let mut values: Vec<&str> = span.attributes.values().map(String::as_str).collect();
    for (_, attributes) in &span.events {
        values.extend(attributes.values().map(String::as_str));
    }
    values.push(&span.service);
    values
}

#[test]
fn a_verification_is_one_trace_from_the_callers_span_to_the_sms_across_a_restart() {
    let receiver = Receiver::start();
    let sms = FakeSms::start();
    let mut host = Host::start(traced(&receiver, HostOptions::default().twilio(&sms)));
    let phone = "+14255550177";
    let started = request(
        "POST",
        &host.url("/api/orchestrators/E4_SmsPhoneVerification"),
        &[
            ("x-functions-key", KEY),
            ("content-type", "application/json"),
            (
                "traceparent",
                &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"),
            ),
        ],
        Some(
            json!({ "phoneNumber": phone, "timeoutSeconds": 300 })
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(started.status, 202, "{}", started.text);
    let id = started.body["id"].as_str().expect("an id").to_string();

    // The SMS request joined the trace.
    let code = sms.code_sent_to(phone);
    let message = &sms.messages()[0];
    let carried = message["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("the SMS request carried no traceparent: {message}"));
    let parts: Vec<&str> = carried.split('-').collect();
    assert_eq!(parts.len(), 4, "{carried}");
    assert_eq!(
        parts[1], CALLER_TRACE,
        "the SMS request is in the caller's trace"
    );
    let sms_parent = parts[2].to_string();

    // The start, the first two episodes and the send reach the receiver
    // while the instance waits; then the host dies and another process
    // on the same database takes the answer.
    receiver.wait_for(&id, "the spans before the wait", |spans| {
        named(spans, "start").len() == 1
            && named(spans, "episode").len() >= 2
            && named(spans, "activity").len() == 1
    });
    host.kill9();
    host.restart();
    let status = host.answer_code(&id, code);
    assert_eq!(status["runtimeStatus"], "Completed");
    assert_eq!(status["output"], json!(true));
    let spans = receiver.wait_for(&id, "the episode that ends the instance", |spans| {
        named(spans, "episode")
            .iter()
            .any(|s| s.attr("status") == Some("Completed"))
    });

    // One trace, the caller's.
    for span in &spans {
        assert_eq!(span.trace_id, CALLER_TRACE, "{span:?}");
        assert_eq!(span.service, "durango", "OTEL_SERVICE_NAME's default");
    }
    // The instance's top span is the caller's child; every other span
    // hangs below it.
    let start = named(&spans, "start");
    assert_eq!(start.len(), 1, "{spans:#?}");
    let start = start[0];
    assert_eq!(start.parent, CALLER_SPAN);
    assert_eq!(start.attr("orchestrator"), Some("E4_SmsPhoneVerification"));
    assert_eq!(
        start.attr("app_version").map(str::len),
        Some(64),
        "{start:?}"
    );
    let ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for span in &spans {
        assert!(
            span.parent == CALLER_SPAN || ids.contains(&span.parent.as_str()),
            "{} has a parent outside the trace: {span:?}",
            span.name
        );
    }
    let episodes = named(&spans, "episode");
    assert!(episodes.len() >= 3, "{episodes:#?}");
    for episode in &episodes {
        assert_eq!(
            episode.parent, start.span_id,
            "episodes are the start's children"
        );
    }
    // The episode after the restart joined the same start span: the
    // context came from the database.
    assert!(episodes
        .iter()
        .any(|e| e.attr("status") == Some("Completed")));
    // The send: a child of the episode that scheduled it, the parent of
    // the SMS request.
    let activity = named(&spans, "activity");
    assert_eq!(activity.len(), 1, "{activity:#?}");
    let activity = activity[0];
    assert_eq!(activity.attr("activity"), Some("E4_SendSmsChallenge"));
    assert_eq!(activity.attr("attempt"), Some("1"));
    assert_eq!(activity.attr("outcome"), Some("completed"));
    assert!(episodes.iter().any(|e| e.span_id == activity.parent));
    assert_eq!(
        activity.span_id, sms_parent,
        "the SMS request's parent is the attempt"
    );
    // Timers and events are on the episodes.
    let events: Vec<&str> = episodes
        .iter()
        .flat_map(|e| e.events.iter().map(|(name, _)| name.as_str()))
        .collect();
    for expected in ["timer created", "waiting for event", "event raised"] {
        assert!(events.contains(&expected), "no {expected:?} in {events:?}");
    }
    let raised = episodes
        .iter()
        .flat_map(|e| &e.events)
        .find(|(name, _)| name == "event raised")
        .expect("the event");
    assert_eq!(
        raised.1.get("event.name").map(String::as_str),
        Some("SmsChallengeResponse")
    );
    // Neither the input nor the code nor the message is on any span.
    let code_text = code.to_string();
    for span in &spans {
        for value in attribute_values(span) {
            assert!(!value.contains(phone), "the phone number on {span:?}");
            assert!(!value.contains("verification code"), "the SMS on {span:?}");
            assert_ne!(value, code_text, "the code on {span:?}");
            assert_ne!(value, format!("{code:04}"), "the code on {span:?}");
        }
    }
    // Protobuf unless told otherwise.
    let types = receiver.content_types.lock().unwrap().clone();
    assert!(
        types.iter().all(|t| t == "application/x-protobuf"),
        "{types:?}"
    );
}

#[test]
fn without_a_traceparent_an_instance_starts_a_trace_its_sub_orchestrations_join() {
    let receiver = Receiver::start();
    let host = Host::start(traced(&receiver, HostOptions::default()));
    let parent = host.start_orchestration("ParentOfEcho", "\"Reply\"");
    let child = format!("{parent}-child");
    wait_until("the child to start", WAIT, || {
        (host.status(&child).status == 202).then_some(())
    });
    host.raise(&child, "Reply", "\"from the child\"");
    assert_eq!(host.wait_finished(&parent)["output"], "from the child");

    let done = |spans: &[Span]| {
        named(spans, "episode")
            .iter()
            .any(|s| s.attr("status") == Some("Completed"))
    };
    let parents = receiver.wait_for(&parent, "the parent's spans", done);
    let children = receiver.wait_for(&child, "the child's spans", done);
    let root = named(&parents, "start");
    assert_eq!(root.len(), 1);
    let root = root[0];
    assert_eq!(root.parent, "", "a new trace: the start span is its root");
    assert_eq!(root.trace_id.len(), 32);
    for span in parents.iter().chain(&children) {
        assert_eq!(span.trace_id, root.trace_id, "{span:?}");
    }
    // The child's start span hangs below the parent's episode that
    // started it; the child's own spans below that.
    let child_start = named(&children, "start");
    assert_eq!(child_start.len(), 1, "{children:#?}");
    let child_start = child_start[0];
    assert_eq!(child_start.attr("orchestrator"), Some("EchoAfterEvent"));
    let starter = named(&parents, "episode")
        .into_iter()
        .find(|e| e.span_id == child_start.parent)
        .expect("the child's start span is a child of a parent's episode");
    assert_eq!(starter.parent, root.span_id);
    for span in &children {
        if span.name.starts_with("episode") {
            assert_eq!(span.parent, child_start.span_id, "{span:?}");
        }
    }
    let echo = named(&children, "activity");
    assert_eq!(echo.len(), 1);
    assert_eq!(echo[0].attr("activity"), Some("Echo"));
    assert!(children.iter().any(|s| s.span_id == echo[0].parent));
}

/// The JSON log lines of a host's log file (every line must be one).
fn json_lines(host: &Host) -> Vec<Value> {
    host.log()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[test]
fn json_log_lines_carry_the_instance_id_of_what_they_are_about() {
    // An SMS endpoint that is not there: the send fails inside the
    // activity's span (wasi:http logs the refused connection) and is
    // retried never (the sample has no retry policy): the instance fails.
    let host = Host::start(
        HostOptions::default()
            .arg("--log-format")
            .arg("json")
            .env("TwilioAccountSid", "AC1")
            .env("TwilioAuthToken", "token")
            .env("TwilioPhoneNumber", "+15005550006")
            .env("TwilioBaseUrl", "http://127.0.0.1:9"),
    );
    let failing = host.start_orchestration("E4_SmsPhoneVerification", "\"+14255550178\"");
    assert_eq!(host.wait_finished(&failing)["runtimeStatus"], "Failed");
    // And retries, logged by the host as it schedules them.
    let retried = host.start_orchestration("Retries", "3");
    assert_eq!(host.wait_finished(&retried)["output"], 3);

    let lines = wait_until("the retries' log lines", WAIT, || {
        let lines = json_lines(&host);
        let retries = lines
            .iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("will retry"))
            })
            .count();
        (retries >= 2).then_some(lines)
    });
    for line in &lines {
        for field in ["timestamp", "level", "target"] {
            assert!(line[field].is_string(), "no {field}: {line}");
        }
        // Whatever line names an instance carries its id as `instance_id`.
        let text = line.to_string();
        for id in [&failing, &retried] {
            if text.contains(id.as_str()) {
                assert_eq!(line["instance_id"], json!(id), "{line}");
            }
        }
    }
    let retries: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("will retry"))
        })
        .collect();
    assert_eq!(retries.len(), 2, "{retries:#?}");
    for line in retries {
        assert_eq!(line["instance_id"], json!(retried));
        assert_eq!(line["activity"], "FailsTwice");
        assert_eq!(line["span"], "activity", "logged inside the attempt's span");
    }
    // A line the host's code did not write for an instance (wasi:http's,
    // about the refused connection) gets the id from the span it was in.
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("wasmtime_wasi_http"))
        })
        .collect();
    assert!(!refused.is_empty(), "wasi:http said nothing: {lines:#?}");
    for line in refused {
        assert_eq!(line["instance_id"], json!(failing), "{line}");
    }
}

#[test]
fn the_last_spans_are_exported_when_the_host_stops() {
    let receiver = Receiver::start();
    let mut host = Host::start(
        HostOptions::default()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.base)
            // No batch is due before the stop.
            .env("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    );
    let id = host.start_orchestration("E1_HelloSequence", "null");
    assert_eq!(host.wait_finished(&id)["runtimeStatus"], "Completed");
    assert!(
        receiver.spans().is_empty(),
        "a batch left before it was due"
    );
    let status = host.terminate();
    assert!(status.success(), "{status}");
    let spans: Vec<Span> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.attr("instance_id") == Some(id.as_str()))
        .collect();
    assert_eq!(named(&spans, "start").len(), 1, "{spans:#?}");
    assert_eq!(named(&spans, "activity").len(), 3, "{spans:#?}");
    assert!(named(&spans, "episode").len() >= 2, "{spans:#?}");
}
