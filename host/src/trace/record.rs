//! A span's record, as its thread keeps it and hands it to the exporter:
//! the OTLP `Span` message itself, in protobuf, written as the span goes
//! (its ids, name and start when it opens, an attribute or an event when it
//! is set, its end, status and flags when it ends), into a buffer its
//! thread reuses (an open span allocates nothing once its thread has
//! ended a few); ending one copies it onto its thread's chunk as a
//! `ScopeSpans.spans` field, so a batch of chunks is a request's spans as
//! they are (otlp.rs). Encoding
//! on the export thread from records of our own took that thread twice the
//! instructions of the spans' own threads (BENCHMARKS.md, session 22).
//! Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto`.

use std::cell::RefCell;
use std::sync::Mutex;

use prost::encoding::{encoded_len_varint, WireType};

use super::proto::{
    delimited_len, key, long_key, put_bytes, put_delimited_head, put_fixed64, put_raw_varint,
    put_varint, varint_len, Out, Room, FIXED64_LEN,
};

/// Defines a closed set of OTLP names.
macro_rules! names {
    ($(#[$doc:meta])* $type:ident { $($variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $type {
            $($variant,)*
        }

        impl $type {
            /// Its name in OTLP.
            #[inline]
            pub fn text(self) -> &'static str {
                match self {
                    $($type::$variant => $text,)*
                }
            }
        }
    };
}

names! {
    /// What an attribute is called.
    Key {
        InstanceId => "instance_id",
        Orchestrator => "orchestrator",
        AppVersion => "app_version",
        Episode => "episode",
        Activity => "activity",
        Attempt => "attempt",
        Status => "status",
        Outcome => "outcome",
        TimerSeq => "timer.seq",
        TimerFireAt => "timer.fire_at",
        EventName => "event.name",
        TimerCount => "timer.count",
    }
}

names! {
    /// What a span or an event is called.
    Name {
        Start => "start",
        Episode => "episode",
        Activity => "activity",
        TimerCreated => "timer created",
        WaitingForEvent => "waiting for event",
        TimerFired => "timer fired",
        EventRaised => "event raised",
        TimersCancelled => "timers cancelled",
    }
}

/// An attribute's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(value: &'a str) -> Value<'a> {
        Value::Str(value)
    }
}

impl From<i64> for Value<'_> {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

/// `Span.SpanKind.SPAN_KIND_INTERNAL`: work inside the host.
pub const KIND_INTERNAL: u64 = 1;
/// `Status.StatusCode.STATUS_CODE_ERROR`.
pub const STATUS_ERROR: u64 = 2;
/// The W3C sampled flag: every exported span was sampled.
pub const FLAG_SAMPLED: u32 = 1;

const DELIMITED: WireType = WireType::LengthDelimited;

/// `ScopeSpans.spans`: the field a chunk's spans are (otlp.rs reads them
/// back for JSON).
pub const SPANS_FIELD: u32 = 2;
const SCOPE_SPANS_SPANS: u8 = key(SPANS_FIELD, DELIMITED);
/// `Span.attributes`.
const SPAN_ATTRIBUTES: u8 = key(9, DELIMITED);
/// `Span.Event.attributes`.
const EVENT_ATTRIBUTES: u8 = key(3, DELIMITED);

/// The room a record's buffer starts with: a start span's body (its
/// fixed fields, 46-56 bytes, and three attributes: a 32-character
/// instance id, a 40-character orchestrator name, a 64-character version,
/// 194 bytes with their keys and lengths), or an episode's with its status
/// and a timer it set.
const ROOM: usize = 256;

/// Buffers each thread keeps for the records it makes next, and the
/// largest kept (a record that grew past it was a rare one).
const SPARE_RECORDS: usize = 64;
const SPARE_CAPACITY: usize = 4 * ROOM;

/// The buffers a thread passes on at once when its spares are full, or
/// takes when it has none; and the most the threads' common pool keeps.
const PASSED: usize = SPARE_RECORDS / 2;
const SHARED_RECORDS: usize = 16 * SPARE_RECORDS;

thread_local! {
    /// The buffers of records this thread dropped, most recent last; a new
    /// record takes the most recent, likely still in this core's cache.
    /// The record used to be 256 zeroed bytes inside the span (and in every
    /// future that held one); a span is now about 80 bytes. The wall clock
    /// did not tell the two apart (BENCHMARKS.md, session 23).
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Spare buffers between threads. A span often ends on another worker than
/// the one it started on (tokio moves tasks between them), so one thread's
/// spares fill while another's run out: without this, one record in twelve
/// of hello's was a new allocation, freed later on another thread
/// (BENCHMARKS.md, session 24). Buffers move `PASSED` at a time, so the
/// lock is taken once in that many records at most.
static SHARED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A spare buffer: this thread's most recent, else some from `shared`.
fn take_spare(spare: &mut Vec<Vec<u8>>, shared: &Mutex<Vec<Vec<u8>>>) -> Option<Vec<u8>> {
    if spare.is_empty() {
        let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
        let from = shared.len().saturating_sub(PASSED);
        spare.extend(shared.drain(from..));
    }
    spare.pop()
}

/// Keeps an emptied buffer among this thread's spares, passing some on to
/// `shared` when they are full (and dropping what it has no room for).
fn keep_spare(spare: &mut Vec<Vec<u8>>, shared: &Mutex<Vec<Vec<u8>>>, bytes: Vec<u8>) {
    if spare.len() >= SPARE_RECORDS {
        let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
        let room = SHARED_RECORDS - shared.len().min(SHARED_RECORDS);
        // The oldest go: the most recent are the likeliest in this cache.
        let passed = spare.drain(..PASSED);
        shared.extend(passed.take(room));
    }
    spare.push(bytes);
}

/// An open span's record.
#[derive(Debug)]
pub struct Record {
    pub failed: bool,
    body: Body,
}

/// A record's body: a buffer from the thread's spares, which it goes back
/// to when the record is dropped.
#[derive(Debug)]
struct Body {
    bytes: Vec<u8>,
}

impl Body {
    #[inline]
    fn new() -> Body {
        let spare = SPARE.try_with(|spare| take_spare(&mut spare.borrow_mut(), &SHARED));
        Body {
            bytes: spare
                .ok()
                .flatten()
                .unwrap_or_else(|| Vec::with_capacity(ROOM)),
        }
    }

    /// The next `n` bytes of the body, to be written: each field's length
    /// is worked out first, so a field grows the buffer at most once.
    #[inline(always)]
    fn room(&mut self, n: usize) -> Room<'_> {
        Room::new(&mut self.bytes, n)
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if self.bytes.capacity() > SPARE_CAPACITY {
            return;
        }
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.clear();
        // A thread that is ending has no spares left to keep it in.
        let _ = SPARE.try_with(|spare| keep_spare(&mut spare.borrow_mut(), &SHARED, bytes));
    }
}

impl Record {
    pub fn new(
        name: Name,
        trace_id: [u8; 16],
        span_id: [u8; 8],
        parent_span_id: [u8; 8],
        start_ns: u64,
    ) -> Record {
        let name = name.text().as_bytes();
        // A root has no parent field.
        let parent = parent_span_id != [0; 8];
        let len = delimited_len(16)
            + delimited_len(8)
            + if parent { delimited_len(8) } else { 0 }
            + delimited_len(name.len())
            + varint_len(KIND_INTERNAL)
            + FIXED64_LEN;
        let mut body = Body::new();
        let mut room = body.room(len);
        put_bytes(&mut room, key(1, DELIMITED), &trace_id);
        put_bytes(&mut room, key(2, DELIMITED), &span_id);
        if parent {
            put_bytes(&mut room, key(4, DELIMITED), &parent_span_id);
        }
        put_bytes(&mut room, key(5, DELIMITED), name);
        put_varint(&mut room, key(6, WireType::Varint), KIND_INTERNAL);
        put_fixed64(&mut room, key(7, WireType::SixtyFourBit), start_ns);
        drop(room);
        Record {
            failed: false,
            body,
        }
    }

    // Inlined where it is called: the key is a constant there, and its
    // text is copied as one.
    #[inline(always)]
    pub fn attribute(&mut self, key: Key, value: Value<'_>) {
        let key = key.text();
        let len = key_value_len(key, value);
        put_key_value(&mut self.body.room(len), SPAN_ATTRIBUTES, key, value);
    }

    /// A `Span.Event`: its time, name and attributes.
    pub fn event(&mut self, name: Name, time_ns: u64, attributes: &[(Key, Value<'_>)]) {
        let name = name.text().as_bytes();
        let content = FIXED64_LEN
            + delimited_len(name.len())
            + attributes
                .iter()
                .map(|&(key, value)| key_value_len(key.text(), value))
                .sum::<usize>();
        let mut room = self.body.room(delimited_len(content));
        put_delimited_head(&mut room, key(11, DELIMITED), content);
        put_fixed64(&mut room, key(1, WireType::SixtyFourBit), time_ns);
        put_bytes(&mut room, key(2, DELIMITED), name);
        for &(key, value) in attributes {
            put_key_value(&mut room, EVENT_ATTRIBUTES, key.text(), value);
        }
    }

    /// Appends the span, ended at `end_ns`, to a chunk: a `ScopeSpans.spans`
    /// field.
    pub fn end_onto(&self, end_ns: u64, chunk: &mut Vec<u8>) {
        const STATUS: [u8; 4] = [
            key(15, DELIMITED),
            2,
            key(3, WireType::Varint),
            STATUS_ERROR as u8,
        ];
        const FLAGS: [u8; 2] = long_key(16, WireType::ThirtyTwoBit);
        let body = self.body.bytes();
        let len =
            body.len() + FIXED64_LEN + if self.failed { STATUS.len() } else { 0 } + FLAGS.len() + 4;
        chunk.reserve(1 + encoded_len_varint(len as u64) + len);
        put_delimited_head(chunk, SCOPE_SPANS_SPANS, len);
        chunk.extend_from_slice(body);
        put_fixed64(chunk, key(8, WireType::SixtyFourBit), end_ns);
        if self.failed {
            chunk.extend_from_slice(&STATUS);
        }
        chunk.extend_from_slice(&FLAGS);
        chunk.extend_from_slice(&FLAG_SAMPLED.to_le_bytes());
    }
}

/// The bytes of a `KeyValue` field (with a one-byte key) `put_key_value`
/// writes.
#[inline]
pub fn key_value_len(key: &str, value: Value<'_>) -> usize {
    delimited_len(key_value_content(key, value))
}

#[inline]
fn any_value_content(value: Value<'_>) -> usize {
    match value {
        Value::Str(text) => delimited_len(text.len()),
        Value::Int(number) => varint_len(number as u64),
    }
}

#[inline]
fn key_value_content(key: &str, value: Value<'_>) -> usize {
    delimited_len(key.len()) + delimited_len(any_value_content(value))
}

/// A `KeyValue` as the field `field_key`: `{ key = 1, value = 2 }`, the
/// value an `AnyValue { string_value = 1 | int_value = 3 }`.
#[inline(always)]
pub fn put_key_value(out: &mut impl Out, field_key: u8, key_text: &str, value: Value<'_>) {
    let any = any_value_content(value);
    let pair = key_value_content(key_text, value);
    if pair < 0x80 {
        // Every length takes a byte (hello's attributes all do): the bytes
        // around the texts go in whole copies, not a byte at a time.
        out.slice(&[
            field_key,
            pair as u8,
            key(1, DELIMITED),
            key_text.len() as u8,
        ]);
        out.slice(key_text.as_bytes());
        match value {
            Value::Str(text) => {
                out.slice(&[
                    key(2, DELIMITED),
                    any as u8,
                    key(1, DELIMITED),
                    text.len() as u8,
                ]);
                out.slice(text.as_bytes());
            }
            Value::Int(number) => {
                out.slice(&[key(2, DELIMITED), any as u8, key(3, WireType::Varint)]);
                put_raw_varint(out, number as u64);
            }
        }
        return;
    }
    put_delimited_head(out, field_key, pair);
    put_bytes(out, key(1, DELIMITED), key_text.as_bytes());
    put_delimited_head(out, key(2, DELIMITED), any);
    match value {
        Value::Str(text) => put_bytes(out, key(1, DELIMITED), text.as_bytes()),
        Value::Int(number) => put_varint(out, key(3, WireType::Varint), number as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
    use prost::Message as _;

    /// The spans a chunk holds, as the official types read them.
    fn spans(chunk: &[u8]) -> Vec<Span> {
        ScopeSpans::decode(chunk)
            .expect("a chunk is ScopeSpans' spans")
            .spans
    }

    fn text(attribute: &KeyValue) -> (&str, Option<&any_value::Value>) {
        (
            attribute.key.as_str(),
            attribute.value.as_ref().and_then(|v| v.value.as_ref()),
        )
    }

    #[test]
    fn a_chunk_holds_the_spans_as_otlp() {
        let mut chunk = Vec::new();
        let mut start = Record::new(Name::Start, [1; 16], [2; 8], [0; 8], 10);
        let long = "i".repeat(300);
        start.attribute(Key::InstanceId, long.as_str().into());
        start.attribute(Key::Episode, Value::Int(-7));
        start.event(
            Name::TimerCreated,
            25,
            &[
                (Key::TimerSeq, 3.into()),
                (Key::TimerFireAt, "2026-12-03".into()),
            ],
        );
        start.event(Name::TimersCancelled, 26, &[]);
        start.attribute(Key::Status, "Completed".into());
        start.end_onto(40, &mut chunk);
        let mut failed = Record::new(Name::Activity, [3; 16], [4; 8], [2; 8], 50);
        failed.failed = true;
        failed.end_onto(60, &mut chunk);

        let spans = spans(&chunk);
        assert_eq!(spans.len(), 2);
        let first = &spans[0];
        assert_eq!(
            (first.trace_id.as_slice(), first.span_id.as_slice()),
            (&[1; 16][..], &[2; 8][..])
        );
        assert!(first.parent_span_id.is_empty(), "a root has no parent");
        assert_eq!((first.name.as_str(), first.kind), ("start", 1));
        assert_eq!(
            (first.start_time_unix_nano, first.end_time_unix_nano),
            (10, 40)
        );
        assert_eq!((first.flags, first.status.as_ref()), (1, None));
        let attributes: Vec<_> = first.attributes.iter().map(text).collect();
        assert_eq!(
            attributes,
            [
                (
                    "instance_id",
                    Some(&any_value::Value::StringValue(long.clone()))
                ),
                ("episode", Some(&any_value::Value::IntValue(-7))),
                (
                    "status",
                    Some(&any_value::Value::StringValue("Completed".into()))
                ),
            ]
        );
        let events: Vec<_> = first
            .events
            .iter()
            .map(|e| (e.name.as_str(), e.time_unix_nano, e.attributes.len()))
            .collect();
        assert_eq!(
            events,
            [("timer created", 25, 2), ("timers cancelled", 26, 0)]
        );
        assert_eq!(
            text(&first.events[0].attributes[1]),
            (
                "timer.fire_at",
                Some(&any_value::Value::StringValue("2026-12-03".into()))
            )
        );
        let second = &spans[1];
        assert_eq!(
            (second.name.as_str(), second.parent_span_id.as_slice()),
            ("activity", &[2; 8][..])
        );
        assert_eq!(second.status.as_ref().map(|s| s.code), Some(2));
        assert!(second.attributes.is_empty() && second.events.is_empty());
    }

    #[test]
    fn a_body_that_outgrows_its_room_inside_an_event_reads_back() {
        let mut record = Record::new(Name::Episode, [1; 16], [2; 8], [3; 8], 10);
        record.attribute(Key::InstanceId, "i".repeat(ROOM - 100).as_str().into());
        let long = "e".repeat(ROOM);
        record.event(
            Name::EventRaised,
            11,
            &[(Key::EventName, long.as_str().into())],
        );
        record.attribute(Key::Episode, Value::Int(5));
        assert!(record.body.bytes.len() > ROOM);
        let mut chunk = Vec::new();
        record.end_onto(12, &mut chunk);
        let span = &spans(&chunk)[0];
        assert_eq!(span.attributes.len(), 2);
        assert_eq!(
            text(&span.events[0].attributes[0]),
            ("event.name", Some(&any_value::Value::StringValue(long)))
        );
        assert_eq!(
            text(&span.attributes[1]),
            ("episode", Some(&any_value::Value::IntValue(5)))
        );
    }

    #[test]
    fn a_thread_reuses_the_buffers_of_the_records_it_dropped() {
        // Each test runs on a thread of its own: the spares are this one's.
        let record = Record::new(Name::Episode, [1; 16], [2; 8], [3; 8], 10);
        let buffer = record.body.bytes.as_ptr();
        drop(record);
        let next = Record::new(Name::Activity, [1; 16], [4; 8], [3; 8], 11);
        assert_eq!(next.body.bytes.as_ptr(), buffer, "the spare buffer");
        let mut chunk = Vec::new();
        next.end_onto(12, &mut chunk);
        assert_eq!(spans(&chunk)[0].name, "activity", "written from its start");

        // A record that grew large (in the one spare buffer) gives it back
        // to the allocator.
        drop(next);
        let mut large = Record::new(Name::Episode, [1; 16], [2; 8], [3; 8], 10);
        large.attribute(Key::EventName, "e".repeat(SPARE_CAPACITY).as_str().into());
        // Counted against what the thread held just before: a thread out
        // of spares takes some from the shared pool, which other tests'
        // threads may have filled.
        let held = SPARE.with(|spare| spare.borrow().len());
        drop(large);
        assert_eq!(SPARE.with(|spare| spare.borrow().len()), held);
    }

    #[test]
    fn spares_pass_from_a_thread_with_too_many_to_one_with_none() {
        let shared = Mutex::new(Vec::new());
        let (mut full, mut empty) = (Vec::new(), Vec::new());
        let buffers: Vec<Vec<u8>> = (0..SPARE_RECORDS + 1)
            .map(|_| Vec::with_capacity(ROOM))
            .collect();
        let oldest = buffers[0].as_ptr();
        for buffer in buffers {
            keep_spare(&mut full, &shared, buffer);
        }
        // The last one found the spares full: the oldest half moved on.
        assert_eq!(full.len(), SPARE_RECORDS - PASSED + 1);
        assert_eq!(shared.lock().unwrap().len(), PASSED);
        assert_eq!(shared.lock().unwrap()[0].as_ptr(), oldest);
        // A thread with none takes them, rather than allocating.
        let taken = take_spare(&mut empty, &shared).expect("a shared spare");
        assert_eq!((empty.len(), shared.lock().unwrap().len()), (PASSED - 1, 0));
        assert_eq!(empty[0].as_ptr(), oldest);
        assert!(taken.capacity() >= ROOM);
        // With nothing anywhere, there is nothing to take.
        let (mut none, nowhere) = (Vec::new(), Mutex::new(Vec::new()));
        assert!(take_spare(&mut none, &nowhere).is_none());
    }

    #[test]
    fn the_shared_spares_are_bounded() {
        let shared = Mutex::new(Vec::new());
        let mut spare = Vec::new();
        for _ in 0..SPARE_RECORDS + 2 * SHARED_RECORDS {
            keep_spare(&mut spare, &shared, Vec::with_capacity(ROOM));
        }
        assert!(spare.len() <= SPARE_RECORDS);
        assert_eq!(shared.lock().unwrap().len(), SHARED_RECORDS);
    }

    #[test]
    fn spans_of_every_length_read_back() {
        // A span's length takes one, two or three bytes; an `activity`
        // attribute of 113 bytes is the longest written in whole copies
        // (its KeyValue is 127 bytes), one of 114 the shortest that is not.
        let lengths = [0, 100, 113, 114, 20_000];
        let mut chunk = Vec::new();
        for length in lengths {
            let mut record = Record::new(Name::Activity, [1; 16], [2; 8], [0; 8], 5);
            record.attribute(Key::Activity, Value::Str(&"a".repeat(length)));
            record.end_onto(6, &mut chunk);
        }
        let read: Vec<_> = spans(&chunk)
            .iter()
            .map(|span| match text(&span.attributes[0]).1 {
                Some(any_value::Value::StringValue(text)) => (text.len(), span.end_time_unix_nano),
                other => panic!("a text value: {other:?}"),
            })
            .collect();
        assert_eq!(read, lengths.map(|length| (length, 6)));
    }

    #[test]
    fn common_spans_fit_the_room_a_buffer_starts_with() {
        let mut start = Record::new(Name::Start, [1; 16], [2; 8], [3; 8], 10);
        start.attribute(Key::InstanceId, "i".repeat(32).as_str().into());
        start.attribute(Key::Orchestrator, "o".repeat(40).as_str().into());
        start.attribute(Key::AppVersion, "v".repeat(64).as_str().into());
        assert!(
            start.body.bytes.len() <= ROOM,
            "{} bytes",
            start.body.bytes.len()
        );
        let mut episode = Record::new(Name::Episode, [1; 16], [3; 8], [2; 8], 10);
        episode.attribute(Key::InstanceId, "i".repeat(32).as_str().into());
        episode.attribute(Key::Episode, Value::Int(4));
        episode.event(
            Name::TimerCreated,
            20,
            &[
                (Key::TimerSeq, 2.into()),
                (Key::TimerFireAt, "2026-12-03T20:00:00Z".into()),
            ],
        );
        episode.attribute(Key::Status, "Running".into());
        assert!(
            episode.body.bytes.len() <= ROOM,
            "{} bytes",
            episode.body.bytes.len()
        );
    }
}
