//! A span's record, as its thread keeps it and hands it to the exporter:
//! fixed fields, then its attributes and events as bytes in the order they
//! were set. An open span allocates nothing (its bytes sit inline until
//! they outgrow `INLINE`), ending one copies it onto its thread's chunk,
//! and the export thread encodes OTLP from the chunks (otlp.rs). Records
//! of owned strings encoded on tokio's workers were most of what traces
//! cost a busy host (BENCHMARKS.md, session 19).

/// Defines a closed set of OTLP names carried as one byte in a record.
macro_rules! names {
    ($(#[$doc:meta])* $type:ident { $($variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub enum $type {
            $($variant,)*
        }

        impl $type {
            const ALL: &[$type] = &[$($type::$variant,)*];

            /// Its name in OTLP.
            pub fn text(self) -> &'static str {
                match self {
                    $($type::$variant => $text,)*
                }
            }

            fn from_byte(byte: u8) -> Option<$type> {
                $type::ALL.get(usize::from(byte)).copied()
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

/// An attribute's value as a chunk holds it: text as the bytes of the
/// `&str` it was (OTLP's protobuf carries them as they are; only JSON
/// needs them as text).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stored<'a> {
    Text(&'a [u8]),
    Int(i64),
}

/// The body's items: an attribute with a text value (key, length, bytes),
/// one with an integer (key, 8 bytes), an event (name, time, the length of
/// its attributes, its attributes). Numbers are little-endian.
const TEXT: u8 = 0;
const INT: u8 = 1;
const EVENT: u8 = 2;

/// Body bytes a record holds without allocating: a start span's three
/// attributes (a 32-character instance id, a 40-character orchestrator
/// name, a 64-character version: 154 bytes with their kinds, keys and
/// lengths), or an episode's with its status and a timer it set.
const INLINE: usize = 160;

/// An open span's record.
#[derive(Debug)]
pub struct Record {
    pub name: Name,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// All zeros for a trace's root.
    pub parent_span_id: [u8; 8],
    pub start_ns: u64,
    pub failed: bool,
    body: Body,
}

/// A record's body: inline until it outgrows `INLINE`, then on the heap.
/// Its writes are a few bytes each, most of a size known where they are
/// made (a general-purpose small vector's insert cost more than the copy).
#[derive(Debug)]
struct Body {
    inline: [u8; INLINE],
    len: usize,
    /// The whole body once it outgrew `inline`.
    spilled: Vec<u8>,
}

impl Body {
    fn new() -> Body {
        Body {
            inline: [0; INLINE],
            len: 0,
            spilled: Vec::new(),
        }
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if end <= INLINE {
            self.inline[self.len..end].copy_from_slice(bytes);
        } else {
            if self.len <= INLINE {
                self.spilled.extend_from_slice(&self.inline[..self.len]);
            }
            self.spilled.extend_from_slice(bytes);
        }
        self.len = end;
    }

    fn bytes(&self) -> &[u8] {
        if self.len <= INLINE {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }

    #[cfg(test)]
    fn spilled(&self) -> bool {
        self.len > INLINE
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
        Record {
            name,
            trace_id,
            span_id,
            parent_span_id,
            start_ns,
            failed: false,
            body: Body::new(),
        }
    }

    pub fn attribute(&mut self, key: Key, value: Value<'_>) {
        put_attribute(&mut self.body, key, value);
    }

    pub fn event(&mut self, name: Name, time_ns: u64, attributes: &[(Key, Value<'_>)]) {
        let [a, b, c, d, e, f, g, h] = time_ns.to_le_bytes();
        let length: usize = attributes
            .iter()
            .map(|(_, value)| attribute_len(*value))
            .sum();
        let [i, j, k, l] = (length as u32).to_le_bytes();
        self.body
            .put(&[EVENT, name as u8, a, b, c, d, e, f, g, h, i, j, k, l]);
        for &(key, value) in attributes {
            put_attribute(&mut self.body, key, value);
        }
    }

    /// Appends the record, ended at `end_ns`, to a chunk (`ended` reads
    /// it back).
    pub fn end_onto(&self, end_ns: u64, chunk: &mut Vec<u8>) {
        let body = self.body.bytes();
        chunk.reserve(HEAD + body.len());
        chunk.extend_from_slice(&[self.name as u8, u8::from(self.failed)]);
        chunk.extend_from_slice(&self.trace_id);
        chunk.extend_from_slice(&self.span_id);
        chunk.extend_from_slice(&self.parent_span_id);
        chunk.extend_from_slice(&self.start_ns.to_le_bytes());
        chunk.extend_from_slice(&end_ns.to_le_bytes());
        chunk.extend_from_slice(&(body.len() as u32).to_le_bytes());
        chunk.extend_from_slice(body);
    }
}

/// A record's fixed fields in a chunk: name, failed, the three ids, the
/// two times, the body's length.
const HEAD: usize = 2 + 16 + 8 + 8 + 8 + 8 + 4;

/// The bytes `put_attribute` writes for `value`.
fn attribute_len(value: Value<'_>) -> usize {
    match value {
        Value::Str(text) => 6 + text.len(),
        Value::Int(_) => 10,
    }
}

fn put_attribute(body: &mut Body, key: Key, value: Value<'_>) {
    // The fixed part in one copy: each copy checks for room.
    match value {
        Value::Str(text) => {
            let [a, b, c, d] = (text.len() as u32).to_le_bytes();
            body.put(&[TEXT, key as u8, a, b, c, d]);
            body.put(text.as_bytes());
        }
        Value::Int(number) => {
            let [a, b, c, d, e, f, g, h] = number.to_le_bytes();
            body.put(&[INT, key as u8, a, b, c, d, e, f, g, h]);
        }
    }
}

/// An ended span, read back from a chunk.
#[derive(Debug)]
pub struct Ended<'a> {
    pub name: Name,
    pub failed: bool,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: [u8; 8],
    pub start_ns: u64,
    pub end_ns: u64,
    body: &'a [u8],
}

impl<'a> Ended<'a> {
    /// Its attributes and events, in the order they were set.
    pub fn items(&self) -> Items<'a> {
        Items(Bytes(self.body))
    }

    pub fn attributes(&self) -> impl Iterator<Item = (Key, Stored<'a>)> {
        self.items().filter_map(|item| match item {
            Item::Attribute(key, value) => Some((key, value)),
            Item::Event { .. } => None,
        })
    }
}

/// An event's attributes.
pub struct Attributes<'a>(Bytes<'a>);

impl<'a> Iterator for Attributes<'a> {
    type Item = (Key, Stored<'a>);

    fn next(&mut self) -> Option<(Key, Stored<'a>)> {
        let [kind, key] = self.0.array()?;
        self.0.attribute(kind, key)
    }
}

/// The spans `end_onto` wrote to `chunk`, in order.
pub fn ended(chunk: &[u8]) -> impl Iterator<Item = Ended<'_>> {
    let mut bytes = Bytes(chunk);
    std::iter::from_fn(move || {
        let [name, failed] = bytes.array()?;
        Some(Ended {
            name: Name::from_byte(name)?,
            failed: failed == 1,
            trace_id: bytes.array()?,
            span_id: bytes.array()?,
            parent_span_id: bytes.array()?,
            start_ns: u64::from_le_bytes(bytes.array()?),
            end_ns: u64::from_le_bytes(bytes.array()?),
            body: bytes.sized()?,
        })
    })
}

/// An item of a record's body.
pub enum Item<'a> {
    Attribute(Key, Stored<'a>),
    Event {
        name: Name,
        time_ns: u64,
        attributes: Attributes<'a>,
    },
}

/// A body's items. Chunks are written by `end_onto` in this process: a
/// malformed one (a bug) ends the items rather than the process.
pub struct Items<'a>(Bytes<'a>);

impl<'a> Iterator for Items<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let bytes = &mut self.0;
        let [kind, code] = bytes.array()?;
        if kind == EVENT {
            return Some(Item::Event {
                name: Name::from_byte(code)?,
                time_ns: u64::from_le_bytes(bytes.array()?),
                attributes: Attributes(Bytes(bytes.sized()?)),
            });
        }
        let (key, value) = bytes.attribute(kind, code)?;
        Some(Item::Attribute(key, value))
    }
}

/// A cursor over bytes a record wrote.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// A field written as its length (4 bytes) and its bytes.
    fn sized(&mut self) -> Option<&'a [u8]> {
        let length = u32::from_le_bytes(self.array()?);
        self.take(length as usize)
    }

    /// An attribute's value, its kind and key read already.
    fn attribute(&mut self, kind: u8, key: u8) -> Option<(Key, Stored<'a>)> {
        let value = match kind {
            TEXT => Stored::Text(self.sized()?),
            INT => Stored::Int(i64::from_le_bytes(self.array()?)),
            _ => return None,
        };
        Some((Key::from_byte(key)?, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_reads_back_what_its_spans_wrote() {
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

        let spans: Vec<Ended> = ended(&chunk).collect();
        assert_eq!(spans.len(), 2);
        let first = &spans[0];
        assert_eq!(
            (first.name, first.failed, first.trace_id, first.span_id),
            (Name::Start, false, [1; 16], [2; 8])
        );
        assert_eq!(
            (first.parent_span_id, first.start_ns, first.end_ns),
            ([0; 8], 10, 40)
        );
        let attributes: Vec<_> = first.attributes().collect();
        assert_eq!(
            attributes,
            [
                (Key::InstanceId, Stored::Text(long.as_bytes())),
                (Key::Episode, Stored::Int(-7)),
                (Key::Status, Stored::Text(b"Completed")),
            ]
        );
        let events: Vec<_> = first
            .items()
            .filter_map(|item| match item {
                Item::Event {
                    name,
                    time_ns,
                    attributes,
                } => Some((name, time_ns, attributes.count())),
                Item::Attribute(..) => None,
            })
            .collect();
        assert_eq!(
            events,
            [(Name::TimerCreated, 25, 2), (Name::TimersCancelled, 26, 0)]
        );
        let second = &spans[1];
        assert_eq!(
            (second.name, second.failed, second.parent_span_id),
            (Name::Activity, true, [2; 8])
        );
        assert_eq!(second.items().count(), 0);
    }

    #[test]
    fn a_body_that_outgrows_its_room_inside_an_event_reads_back() {
        let mut record = Record::new(Name::Episode, [1; 16], [2; 8], [0; 8], 10);
        record.attribute(Key::InstanceId, "i".repeat(INLINE - 20).as_str().into());
        let long = "e".repeat(INLINE);
        record.event(
            Name::EventRaised,
            11,
            &[(Key::EventName, long.as_str().into())],
        );
        record.attribute(Key::Episode, Value::Int(5));
        assert!(record.body.spilled());
        let mut chunk = Vec::new();
        record.end_onto(12, &mut chunk);
        let span = ended(&chunk).next().unwrap();
        let items: Vec<_> = span
            .items()
            .map(|item| match item {
                Item::Attribute(key, value) => (key, value, Vec::new()),
                Item::Event { attributes, .. } => {
                    (Key::EventName, Stored::Int(0), attributes.collect())
                }
            })
            .collect();
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[1].2,
            [(Key::EventName, Stored::Text(long.as_bytes()))]
        );
        assert_eq!(items[2].1, Stored::Int(5));
    }

    #[test]
    fn common_spans_fit_inline() {
        let mut start = Record::new(Name::Start, [1; 16], [2; 8], [0; 8], 10);
        start.attribute(Key::InstanceId, "i".repeat(32).as_str().into());
        start.attribute(Key::Orchestrator, "o".repeat(40).as_str().into());
        start.attribute(Key::AppVersion, "v".repeat(64).as_str().into());
        assert!(!start.body.spilled(), "{} bytes", start.body.len);
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
        assert!(!episode.body.spilled(), "{} bytes", episode.body.len);
    }

    #[test]
    fn names_round_trip_through_their_byte() {
        for &key in Key::ALL {
            assert_eq!(Key::from_byte(key as u8), Some(key));
        }
        for &name in Name::ALL {
            assert_eq!(Name::from_byte(name as u8), Some(name));
        }
        assert_eq!(Key::from_byte(200), None);
    }
}
