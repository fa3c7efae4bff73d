//! OTLP's trace export request around a batch of chunks: protobuf
//! (`http/protobuf`, the default), whose spans the chunks already are
//! (record.rs), or OTLP/JSON (`http/json`), made from them. A batch's
//! spans go behind room left for the request's head (the resource and the
//! scope), which is written in front of them once their length is known.
//! Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto`.

use prost::encoding::WireType;
use serde_json::{json, Map, Value as Json};

use super::proto::{delimited_len, fields, key, put_bytes, put_delimited_head, Field};
use super::record::{key_value_len, put_key_value, Value, SPANS_FIELD};

/// What the exporter names itself as (the instrumentation scope).
const SCOPE: &str = "durango";

/// The wire format (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

/// Wraps batches of spans in requests, in one format for one resource.
#[derive(Debug)]
pub struct Encoder {
    format: Format,
    /// What goes before the spans: in protobuf the resource (field 1 of
    /// `ResourceSpans`) and the scope (field 1 of `ScopeSpans`), whose
    /// parents' lengths depend on the spans; in JSON the text up to the
    /// spans' array.
    head: Vec<u8>,
    scope: Vec<u8>,
}

const DELIMITED: WireType = WireType::LengthDelimited;

impl Encoder {
    pub fn new(format: Format, resource: &[(String, String)]) -> Encoder {
        match format {
            Format::Protobuf => {
                let content = resource
                    .iter()
                    .map(|(key, value)| key_value_len(key, Value::Str(value)))
                    .sum();
                let mut head = Vec::new();
                put_delimited_head(&mut head, key(1, DELIMITED), content);
                for (name, value) in resource {
                    put_key_value(&mut head, key(1, DELIMITED), name, Value::Str(value));
                }
                let mut scope = Vec::new();
                put_delimited_head(&mut scope, key(1, DELIMITED), delimited_len(SCOPE.len()));
                put_bytes(&mut scope, key(1, DELIMITED), SCOPE.as_bytes());
                Encoder {
                    format,
                    head,
                    scope,
                }
            }
            Format::Json => {
                let attributes: Vec<Json> = resource
                    .iter()
                    .map(|(key, value)| json!({ "key": key, "value": { "stringValue": value } }))
                    .collect();
                let head = format!(
                    r#"{{"resourceSpans":[{{"resource":{{"attributes":{}}},"scopeSpans":[{{"scope":{{"name":"{SCOPE}"}},"spans":["#,
                    Json::from(attributes)
                );
                Encoder {
                    format,
                    head: head.into_bytes(),
                    scope: Vec::new(),
                }
            }
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self.format {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }

    /// A batch's request, as parts sent one after the other: in protobuf
    /// the head (written into `head`: the resource, the scope and their
    /// lengths) and then the chunks (`Record::end_onto`) as they are, a
    /// batch's hundreds of kilobytes never copied into one body; in JSON
    /// the whole request, made in `head`.
    pub fn request<'a>(&self, head: &'a mut Vec<u8>, chunks: &[&'a [u8]]) -> Vec<&'a [u8]> {
        head.clear();
        match self.format {
            Format::Protobuf => {
                let spans: usize = chunks.iter().map(|chunk| chunk.len()).sum();
                let scope_spans = self.scope.len() + spans;
                let resource_spans = self.head.len() + delimited_len(scope_spans);
                put_delimited_head(head, key(1, DELIMITED), resource_spans);
                head.extend_from_slice(&self.head);
                put_delimited_head(head, key(2, DELIMITED), scope_spans);
                head.extend_from_slice(&self.scope);
                let mut parts = Vec::with_capacity(1 + chunks.len());
                parts.push(&head[..]);
                parts.extend_from_slice(chunks);
                parts
            }
            Format::Json => {
                head.extend_from_slice(&self.head);
                for chunk in chunks {
                    for (number, field) in fields(chunk) {
                        if let (SPANS_FIELD, Field::Delimited(span)) = (number, field) {
                            serde_json::to_writer(&mut *head, &json_span(span))
                                .expect("JSON values serialize");
                            head.push(b',');
                        }
                    }
                }
                // Every span ended with a comma.
                if head.len() > self.head.len() {
                    head.pop();
                }
                head.extend_from_slice(b"]}]}]}");
                vec![&head[..]]
            }
        }
    }
}

/// A span in OTLP/JSON, from its protobuf: ids in hex, 64-bit numbers as
/// strings, enums as numbers, as the specification's JSON mapping says.
fn json_span(span: &[u8]) -> Json {
    let mut out = Map::new();
    let (mut attributes, mut events) = (Vec::new(), Vec::new());
    for (number, field) in fields(span) {
        let (name, value) = match (number, field) {
            (1, Field::Delimited(id)) => ("traceId", hex(id).into()),
            (2, Field::Delimited(id)) => ("spanId", hex(id).into()),
            (4, Field::Delimited(id)) => ("parentSpanId", hex(id).into()),
            (5, Field::Delimited(name)) => ("name", text(name).into()),
            (6, Field::Varint(kind)) => ("kind", kind.into()),
            (7, Field::Fixed64(time)) => ("startTimeUnixNano", time.to_string().into()),
            (8, Field::Fixed64(time)) => ("endTimeUnixNano", time.to_string().into()),
            (9, Field::Delimited(pair)) => {
                attributes.push(json_key_value(pair));
                continue;
            }
            (11, Field::Delimited(event)) => {
                events.push(json_event(event));
                continue;
            }
            (15, Field::Delimited(status)) => ("status", json_status(status)),
            (16, Field::Fixed32(flags)) => ("flags", flags.into()),
            _ => continue,
        };
        out.insert(name.into(), value);
    }
    out.insert("attributes".into(), attributes.into());
    out.insert("events".into(), events.into());
    out.into()
}

fn json_event(event: &[u8]) -> Json {
    let mut out = json!({ "attributes": [] });
    for (number, field) in fields(event) {
        match (number, field) {
            (1, Field::Fixed64(time)) => out["timeUnixNano"] = time.to_string().into(),
            (2, Field::Delimited(name)) => out["name"] = text(name).into(),
            (3, Field::Delimited(pair)) => out["attributes"]
                .as_array_mut()
                .expect("an array")
                .push(json_key_value(pair)),
            _ => {}
        }
    }
    out
}

fn json_key_value(pair: &[u8]) -> Json {
    let mut out = json!({});
    for (number, field) in fields(pair) {
        match (number, field) {
            (1, Field::Delimited(key)) => out["key"] = text(key).into(),
            (2, Field::Delimited(any)) => {
                for (number, field) in fields(any) {
                    match (number, field) {
                        (1, Field::Delimited(value)) => {
                            out["value"] = json!({ "stringValue": text(value) })
                        }
                        (3, Field::Varint(value)) => {
                            out["value"] = json!({ "intValue": (value as i64).to_string() })
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn json_status(status: &[u8]) -> Json {
    let mut out = json!({});
    for (number, field) in fields(status) {
        if let (3, Field::Varint(code)) = (number, field) {
            out["code"] = code.into();
        }
    }
    out
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    super::hex_onto(&mut text, bytes);
    text
}

#[cfg(test)]
mod tests {
    use super::super::record::{Key, Name, Record, Value};
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message as _;

    /// A request's parts, as they go out.
    fn sent(parts: Vec<&[u8]>) -> Vec<u8> {
        parts.concat()
    }

    /// An episode's span, ended, as a chunk holds it.
    fn record(failed: bool, parent: [u8; 8]) -> Vec<u8> {
        let mut record = Record::new(
            Name::Episode,
            [0xab; 16],
            [0xcd; 8],
            parent,
            1_700_000_000_000_000_000,
        );
        record.attribute(Key::InstanceId, Value::Str(&"x".repeat(200)));
        record.event(
            Name::EventRaised,
            1_700_000_000_000_100_000,
            &[(Key::EventName, "Approval".into())],
        );
        record.attribute(Key::Episode, Value::Int(-3));
        record.failed = failed;
        let mut chunk = Vec::new();
        record.end_onto(1_700_000_000_000_500_000, &mut chunk);
        chunk
    }

    #[test]
    fn the_official_types_read_what_we_encode() {
        let resource = vec![("service.name".to_string(), "durango".to_string())];
        let records = [record(false, [0x11; 8]), record(true, [0; 8])];
        let encoder = Encoder::new(Format::Protobuf, &resource);
        // Two requests from one head buffer: the second carries only its
        // own.
        let mut head = Vec::new();
        let three = [&records[1][..], &records[1], &records[1]];
        let first =
            ExportTraceServiceRequest::decode(&sent(encoder.request(&mut head, &three))[..])
                .unwrap();
        assert_eq!(first.resource_spans[0].scope_spans[0].spans.len(), 3);
        let parts = encoder.request(&mut head, &[&records[0], &records[1]]);
        assert_eq!(parts.len(), 3, "the head, then the chunks as they are");
        assert_eq!((parts[1], parts[2]), (&records[0][..], &records[1][..]));
        let request = ExportTraceServiceRequest::decode(&sent(parts)[..]).expect("valid protobuf");
        let resource_spans = &request.resource_spans[0];
        let attribute = &resource_spans.resource.as_ref().unwrap().attributes[0];
        assert_eq!(attribute.key, "service.name");
        let scope = &resource_spans.scope_spans[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "durango");
        assert_eq!(scope.spans.len(), 2);
        let span = &scope.spans[0];
        assert_eq!(span.trace_id, vec![0xab; 16]);
        assert_eq!(span.span_id, vec![0xcd; 8]);
        assert_eq!(span.parent_span_id, vec![0x11; 8]);
        assert_eq!(span.name, "episode");
        assert_eq!(span.kind, 1);
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_700_000_000_000_500_000);
        assert_eq!(span.flags, 1);
        assert_eq!(span.attributes[0].key, "instance_id");
        assert_eq!(
            span.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("x".repeat(200)))
        );
        assert_eq!(
            span.attributes[1].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(-3))
        );
        assert_eq!(span.events[0].name, "event raised");
        assert_eq!(span.events[0].time_unix_nano, 1_700_000_000_000_100_000);
        assert_eq!(span.events[0].attributes[0].key, "event.name");
        assert!(span.status.is_none());
        let root = &scope.spans[1];
        assert!(root.parent_span_id.is_empty());
        assert_eq!(root.status.as_ref().unwrap().code, 2);
    }

    #[test]
    fn json_follows_the_otlp_mapping() {
        let resource = vec![("service.name".to_string(), "durango".to_string())];
        let encoder = Encoder::new(Format::Json, &resource);
        let mut head = Vec::new();
        let empty: Json = serde_json::from_slice(&sent(encoder.request(&mut head, &[]))).unwrap();
        assert_eq!(
            empty["resourceSpans"][0]["scopeSpans"][0]["spans"],
            json!([])
        );
        let (failed, root) = (record(true, [0x11; 8]), record(false, [0; 8]));
        let parts = encoder.request(&mut head, &[&failed, &root]);
        assert_eq!(parts.len(), 1, "one body");
        let request: Json = serde_json::from_slice(&sent(parts)).unwrap();
        let resource = &request["resourceSpans"][0]["resource"]["attributes"][0];
        assert_eq!(resource["value"]["stringValue"], "durango");
        assert_eq!(
            request["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        let spans = &request["resourceSpans"][0]["scopeSpans"][0]["spans"];
        assert_eq!(
            spans[0],
            json!({
                "traceId": "ab".repeat(16),
                "spanId": "cd".repeat(8),
                "parentSpanId": "11".repeat(8),
                "name": "episode",
                "kind": 1,
                "startTimeUnixNano": "1700000000000000000",
                "endTimeUnixNano": "1700000000000500000",
                "attributes": [
                    { "key": "instance_id", "value": { "stringValue": "x".repeat(200) } },
                    { "key": "episode", "value": { "intValue": "-3" } },
                ],
                "events": [{
                    "timeUnixNano": "1700000000000100000",
                    "name": "event raised",
                    "attributes": [{ "key": "event.name", "value": { "stringValue": "Approval" } }],
                }],
                "status": { "code": 2 },
                "flags": 1,
            })
        );
        let root = spans[1].as_object().unwrap();
        assert!(!root.contains_key("parentSpanId") && !root.contains_key("status"));
    }
}
