//! OTLP's trace export request, encoded straight from our span records on
//! the export thread: protobuf (`http/protobuf`, the default) with prost's
//! field encoders, nothing allocated per span; or OTLP/JSON (`http/json`).
//! A batch's spans are encoded behind room left for the request's head
//! (the resource and the scope), which goes in front of them once their
//! length is known. Field numbers are those of
//! `opentelemetry/proto/trace/v1/trace.proto`.

use prost::encoding::{encode_varint, encoded_len_varint, WireType};
use serde_json::{json, Value as Json};

use super::record::{Ended, Item, Key, Stored};

/// What the exporter names itself as (the instrumentation scope).
const SCOPE: &str = "durango";
/// `Span.SpanKind.SPAN_KIND_INTERNAL`: work inside the host.
const KIND_INTERNAL: u64 = 1;
/// `Status.StatusCode.STATUS_CODE_ERROR`.
const STATUS_ERROR: u64 = 2;
/// The W3C sampled flag: every exported span was sampled.
const FLAG_SAMPLED: u32 = 1;

/// The wire format (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

/// Encodes spans and wraps batches of them in requests, in one format for
/// one resource.
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

impl Encoder {
    pub fn new(format: Format, resource: &[(String, String)]) -> Encoder {
        match format {
            Format::Protobuf => {
                let mut head = Vec::new();
                message(&mut head, 1, |buf| {
                    for (key, value) in resource {
                        key_value(buf, 1, key, Stored::Text(value.as_bytes()));
                    }
                });
                let mut scope = Vec::new();
                message(&mut scope, 1, |buf| bytes(buf, 1, SCOPE.as_bytes()));
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

    /// Appends `span` to a batch's bytes.
    pub fn append_span(&self, out: &mut Vec<u8>, span: &Ended) {
        match self.format {
            Format::Protobuf => message(out, 2, |buf| encode_span(buf, span)),
            Format::Json => {
                serde_json::to_writer(&mut *out, &json_span(span)).expect("JSON values serialize");
                // Every span ends with a comma; the request drops the last.
                out.push(b',');
            }
        }
    }

    /// Starts a batch's request in `out`, leaving the room its head takes
    /// at most: `finish` writes the head in front of the spans rather than
    /// copying a batch's hundreds of kilobytes behind it.
    pub fn begin(&self, out: &mut Vec<u8>) {
        out.clear();
        out.resize(self.head_room(), 0);
    }

    fn head_room(&self) -> usize {
        match self.format {
            // Two keys and two lengths, a length taking up to 10 bytes.
            Format::Protobuf => self.head.len() + self.scope.len() + 2 * (1 + 10),
            Format::Json => self.head.len(),
        }
    }

    /// The request carrying the spans `append_span` added to `out` since
    /// `begin`: its head is written in front of them.
    pub fn finish<'a>(&self, out: &'a mut Vec<u8>) -> &'a [u8] {
        let room = self.head_room();
        match self.format {
            Format::Protobuf => {
                let scope_spans = (self.scope.len() + out.len() - room) as u64;
                let resource_spans = self.head.len() as u64
                    + key_len(2)
                    + encoded_len_varint(scope_spans) as u64
                    + scope_spans;
                let mut head = Vec::with_capacity(room);
                field(&mut head, 1, WireType::LengthDelimited);
                encode_varint(resource_spans, &mut head);
                head.extend_from_slice(&self.head);
                field(&mut head, 2, WireType::LengthDelimited);
                encode_varint(scope_spans, &mut head);
                head.extend_from_slice(&self.scope);
                let start = room - head.len();
                out[start..room].copy_from_slice(&head);
                &out[start..]
            }
            Format::Json => {
                out[..room].copy_from_slice(&self.head);
                // Every span ended with a comma.
                if out.len() > room {
                    out.pop();
                }
                out.extend_from_slice(b"]}]}]}");
                &out[..]
            }
        }
    }
}

fn key_len(tag: u32) -> u64 {
    prost::encoding::key_len(tag) as u64
}

fn encode_span(buf: &mut Vec<u8>, span: &Ended) {
    bytes(buf, 1, &span.trace_id);
    bytes(buf, 2, &span.span_id);
    if span.parent_span_id != [0; 8] {
        bytes(buf, 4, &span.parent_span_id);
    }
    bytes(buf, 5, span.name.text().as_bytes());
    varint(buf, 6, KIND_INTERNAL);
    fixed64(buf, 7, span.start_ns);
    fixed64(buf, 8, span.end_ns);
    // Attributes (9) and events (11) as they were set: a repeated field's
    // items may come between another's.
    for item in span.items() {
        match item {
            Item::Attribute(key, value) => key_value(buf, 9, key.text(), value),
            Item::Event {
                name,
                time_ns,
                attributes,
            } => message(buf, 11, |buf| {
                fixed64(buf, 1, time_ns);
                bytes(buf, 2, name.text().as_bytes());
                for (key, value) in attributes {
                    key_value(buf, 3, key.text(), value);
                }
            }),
        }
    }
    if span.failed {
        message(buf, 15, |buf| varint(buf, 3, STATUS_ERROR));
    }
    field(buf, 16, WireType::ThirtyTwoBit);
    buf.extend_from_slice(&FLAG_SAMPLED.to_le_bytes());
}

fn key_value(buf: &mut Vec<u8>, tag: u32, key: &str, value: Stored) {
    // Small and many: their lengths are worked out rather than found by
    // writing and moving.
    let any = match value {
        Stored::Text(text) => 1 + encoded_len_varint(text.len() as u64) + text.len(),
        Stored::Int(number) => 1 + encoded_len_varint(number as u64),
    };
    let pair = 1
        + encoded_len_varint(key.len() as u64)
        + key.len()
        + 1
        + encoded_len_varint(any as u64)
        + any;
    field(buf, tag, WireType::LengthDelimited);
    put_varint(buf, pair as u64);
    bytes(buf, 1, key.as_bytes());
    // AnyValue { string_value = 1 | int_value = 3 }
    field(buf, 2, WireType::LengthDelimited);
    put_varint(buf, any as u64);
    match value {
        Stored::Text(text) => bytes(buf, 1, text),
        Stored::Int(number) => varint(buf, 3, number as u64),
    }
}

/// The bytes a message's length is first given: spans take 128 bytes to
/// 16 KiB, so theirs is not moved once known.
const LENGTH_ROOM: usize = 2;

/// A length-delimited field whose body `write` appends: the length is
/// known once written, and goes in front of it (moving the body only when
/// it takes other than `LENGTH_ROOM` bytes).
fn message(buf: &mut Vec<u8>, tag: u32, write: impl FnOnce(&mut Vec<u8>)) {
    field(buf, tag, WireType::LengthDelimited);
    let at = buf.len();
    buf.extend_from_slice(&[0; LENGTH_ROOM]);
    write(buf);
    let length = buf.len() - at - LENGTH_ROOM;
    let room = encoded_len_varint(length as u64);
    if room < LENGTH_ROOM {
        buf.copy_within(at + LENGTH_ROOM.., at + room);
        buf.truncate(at + room + length);
    } else if room > LENGTH_ROOM {
        buf.resize(at + room + length, 0);
        buf.copy_within(at + LENGTH_ROOM..at + LENGTH_ROOM + length, at + room);
    }
    encode_varint(length as u64, &mut &mut buf[at..at + room]);
}

/// A field's key, as prost's `encode_key` writes it (one byte, inline,
/// for fields 1-15).
#[inline]
fn field(buf: &mut Vec<u8>, tag: u32, wire_type: WireType) {
    put_varint(buf, u64::from(tag << 3 | wire_type as u32));
}

/// `encode_varint`, with the one-byte case (most keys and lengths here)
/// inline.
#[inline]
fn put_varint(buf: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        buf.push(value as u8);
    } else {
        encode_varint(value, buf);
    }
}

fn bytes(buf: &mut Vec<u8>, tag: u32, value: &[u8]) {
    field(buf, tag, WireType::LengthDelimited);
    put_varint(buf, value.len() as u64);
    buf.extend_from_slice(value);
}

fn varint(buf: &mut Vec<u8>, tag: u32, value: u64) {
    field(buf, tag, WireType::Varint);
    put_varint(buf, value);
}

fn fixed64(buf: &mut Vec<u8>, tag: u32, value: u64) {
    field(buf, tag, WireType::SixtyFourBit);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// A span in OTLP/JSON: ids in hex, 64-bit numbers as strings, enums as
/// numbers, as the specification's JSON mapping says.
fn json_span(span: &Ended) -> Json {
    let kv = |(key, value): (Key, Stored)| -> Json {
        let value = match value {
            Stored::Text(text) => json!({ "stringValue": String::from_utf8_lossy(text) }),
            Stored::Int(number) => json!({ "intValue": number.to_string() }),
        };
        json!({ "key": key.text(), "value": value })
    };
    let mut events = Vec::new();
    for item in span.items() {
        if let Item::Event {
            name,
            time_ns,
            attributes,
        } = item
        {
            events.push(json!({
                "timeUnixNano": time_ns.to_string(),
                "name": name.text(),
                "attributes": attributes.map(kv).collect::<Vec<_>>(),
            }));
        }
    }
    let mut out = json!({
        "traceId": hex(&span.trace_id),
        "spanId": hex(&span.span_id),
        "name": span.name.text(),
        "kind": KIND_INTERNAL,
        "startTimeUnixNano": span.start_ns.to_string(),
        "endTimeUnixNano": span.end_ns.to_string(),
        "attributes": span.attributes().map(kv).collect::<Vec<_>>(),
        "events": events,
        "flags": FLAG_SAMPLED,
    });
    if span.parent_span_id != [0; 8] {
        out["parentSpanId"] = hex(&span.parent_span_id).into();
    }
    if span.failed {
        out["status"] = json!({ "code": STATUS_ERROR });
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    super::hex_onto(&mut text, bytes);
    text
}

#[cfg(test)]
mod tests {
    use super::super::record::{self, Name, Record, Value};
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message as _;

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

    fn append(encoder: &Encoder, spans: &mut Vec<u8>, chunk: &[u8]) {
        for span in record::ended(chunk) {
            encoder.append_span(spans, &span);
        }
    }

    #[test]
    fn the_official_types_read_what_we_encode() {
        let resource = vec![("service.name".to_string(), "durango".to_string())];
        let records = [record(false, [0x11; 8]), record(true, [0; 8])];
        let encoder = Encoder::new(Format::Protobuf, &resource);
        // Two requests in one buffer: the second carries only its own.
        let mut out = Vec::new();
        encoder.begin(&mut out);
        append(&encoder, &mut out, &records[1]);
        append(&encoder, &mut out, &records[1]);
        append(&encoder, &mut out, &records[1]);
        let first = ExportTraceServiceRequest::decode(encoder.finish(&mut out)).unwrap();
        assert_eq!(first.resource_spans[0].scope_spans[0].spans.len(), 3);
        encoder.begin(&mut out);
        append(&encoder, &mut out, &records[0]);
        append(&encoder, &mut out, &records[1]);
        let request =
            ExportTraceServiceRequest::decode(encoder.finish(&mut out)).expect("valid protobuf");
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
    fn spans_of_every_length_decode() {
        // A span's length takes one, two or three bytes, and is moved into
        // place differently for each.
        let encoder = Encoder::new(Format::Protobuf, &[]);
        let mut spans = Vec::new();
        encoder.begin(&mut spans);
        let lengths = [0, 100, 20_000];
        for length in lengths {
            let mut record = Record::new(Name::Activity, [1; 16], [2; 8], [0; 8], 5);
            record.attribute(Key::Activity, Value::Str(&"a".repeat(length)));
            let mut chunk = Vec::new();
            record.end_onto(6, &mut chunk);
            append(&encoder, &mut spans, &chunk);
        }
        let request = ExportTraceServiceRequest::decode(encoder.finish(&mut spans)).unwrap();
        let decoded: Vec<_> = request.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(
                |span| match &span.attributes[0].value.as_ref().unwrap().value {
                    Some(any_value::Value::StringValue(text)) => {
                        (text.len(), span.end_time_unix_nano)
                    }
                    other => panic!("a text value: {other:?}"),
                },
            )
            .collect();
        assert_eq!(decoded, lengths.map(|length| (length, 6)));
    }

    #[test]
    fn json_follows_the_otlp_mapping() {
        let resource = vec![("service.name".to_string(), "durango".to_string())];
        let encoder = Encoder::new(Format::Json, &resource);
        let mut spans = Vec::new();
        encoder.begin(&mut spans);
        let empty: Json = serde_json::from_slice(encoder.finish(&mut spans)).unwrap();
        assert_eq!(
            empty["resourceSpans"][0]["scopeSpans"][0]["spans"],
            json!([])
        );
        encoder.begin(&mut spans);
        append(&encoder, &mut spans, &record(true, [0x11; 8]));
        append(&encoder, &mut spans, &record(false, [0; 8]));
        let request: Json = serde_json::from_slice(encoder.finish(&mut spans)).unwrap();
        let resource = &request["resourceSpans"][0]["resource"]["attributes"][0];
        assert_eq!(resource["value"]["stringValue"], "durango");
        assert_eq!(
            request["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        let span = &request["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "ab".repeat(16));
        assert_eq!(span["parentSpanId"], "11".repeat(8));
        assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(span["attributes"][1]["value"]["intValue"], "-3");
        assert_eq!(span["events"][0]["name"], "event raised");
        assert_eq!(
            span["events"][0]["attributes"][0]["value"]["stringValue"],
            "Approval"
        );
        assert_eq!(span["status"]["code"], 2);
    }
}
