//! Traces and logs: the `tracing` subscriber a server process installs,
//! OpenTelemetry traces over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and the spans an
//! instance's work runs in.
//!
//! Every instance has a trace: its start span (child of the `traceparent`
//! the start request carried, else the root of a new trace) is stored with
//! the instance (`instances.trace_context`: `Parent::to_bytes` in SQLite, a
//! W3C `traceparent` in PostgreSQL), so its later spans join it on any
//! host and after any restart: one span per
//! episode and per activity attempt, each a child of the start span (an
//! activity scheduled by an episode this host ran: of that episode's span).
//! A sub-orchestration's start span is a child of the episode that started
//! it. Timers and events are events on the episode spans. Attributes name
//! the instance, its orchestrator, its app version, an activity and its
//! attempt and outcome, never inputs, outputs or event data.
//!
//! Instance spans are our own records, not `tracing` spans fed through the
//! OpenTelemetry SDK: a record is the span's OTLP protobuf, written where
//! the span happens (record.rs), and the export thread wraps a batch of
//! them in a request (otlp.rs). The SDK's path cost a busy host a third
//! of its rate (BENCHMARKS.md, session 8). With `--log-format json` an
//! instance span is also a `tracing` span, so the lines written inside it
//! carry its instance id. When neither reads them, a span is nothing but
//! one load of a flag.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

mod export;
mod json;
mod otlp;
mod proto;
mod record;

use record::Record;
pub use record::{Key, Name, Value};

/// The target of instance spans: `RUST_LOG` directives can name it.
pub const TARGET: &str = "durango::instance";

/// The log lines' format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line, with the instance id (`instance_id`) of the
    /// instance the line is about, for log shippers.
    Json,
}

/// The exporter, once `init` found an endpoint.
static EXPORTER: OnceLock<export::Exporter> = OnceLock::new();
/// Whether instance spans are also `tracing` spans (JSON log lines).
static LOG_SPANS: AtomicBool = AtomicBool::new(false);

/// Whether `pause` holds new spans back (`durango bench
/// --toggle-traces-ms`).
static PAUSED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported: the spans already recorded go out, even
/// paused.
#[inline]
fn exporting() -> Option<&'static export::Exporter> {
    EXPORTER.get()
}

/// Whether new spans are recorded: traces are exported and not paused.
#[inline]
fn recording() -> Option<&'static export::Exporter> {
    EXPORTER.get().filter(|_| !PAUSED.load(Ordering::Relaxed))
}

/// Whether this process exports traces (an OTLP endpoint was set).
pub fn exported() -> bool {
    exporting().is_some()
}

/// Holds new spans back, as if traces were off, or lets them through
/// again; for the benchmark that measures what traces cost within one
/// process.
pub fn pause(paused: bool) {
    PAUSED.store(paused, Ordering::Relaxed);
}

/// Hands the spans this thread ended over to the exporter; from then on
/// the thread keeps the spans it ends until its next call (or a chunk's
/// worth). For threads that call it whenever they idle and as they stop:
/// tokio's workers (main.rs).
pub fn flush_thread() {
    if let Some(exporter) = exporting() {
        exporter.flush_thread();
    }
}

/// What a server process installed; `shutdown` exports the spans still
/// queued.
pub struct Telemetry;

impl Telemetry {
    /// Exports what is queued and stops the exporter (waits for the
    /// export, up to its time-out).
    pub fn shutdown(self) {
        if let Some(exporter) = exporting() {
            exporter.shutdown();
        }
    }
}

const DEFAULT_FILTER: &str = "info,wasmtime=warn,cranelift=warn";

/// Installs the process's subscriber: log lines on stderr in `format`,
/// and the OTLP exporter when the environment names an endpoint.
pub fn init(format: LogFormat) -> Telemetry {
    match export::Settings::from_env() {
        Ok(Some(settings)) => export::Exporter::start(settings, &EXPORTER),
        Ok(None) => {}
        Err(error) => eprintln!("durango: traces are off: {error}"),
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| DEFAULT_FILTER.into());
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        LogFormat::Json => {
            LOG_SPANS.store(true, Ordering::Relaxed);
            let lines = tracing_subscriber::fmt::layer()
                .event_format(json::JsonLines)
                .with_writer(std::io::stderr)
                .with_filter(filter);
            tracing_subscriber::registry()
                .with(lines)
                .with(json::InstanceIds)
                .init();
        }
    }
    Telemetry
}

/// A span's identity: what a `traceparent` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Context {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl Context {
    /// A W3C `traceparent` (version 00), if it is a valid one. Every span
    /// but a new trace's root parses its parent's: the fields are read at
    /// their fixed places.
    fn parse(text: &str) -> Option<Context> {
        let text = text.trim().as_bytes();
        if text.len() != 55 || !text.starts_with(b"00-") || text[35] != b'-' || text[52] != b'-' {
            return None;
        }
        let mut context = Context {
            trace_id: [0; 16],
            span_id: [0; 8],
            sampled: false,
        };
        let mut flags = [0u8];
        hex_into(&text[3..35], &mut context.trace_id)?;
        hex_into(&text[36..52], &mut context.span_id)?;
        hex_into(&text[53..], &mut flags)?;
        context.sampled = flags[0] & 1 == 1;
        context.valid()
    }

    /// Itself, unless an id is all zeros (which W3C says is no id).
    fn valid(self) -> Option<Context> {
        (self.trace_id != [0; 16] && self.span_id != [0; 8]).then_some(self)
    }

    fn traceparent(&self) -> String {
        let mut text = String::with_capacity(55);
        text.push_str("00-");
        hex_onto(&mut text, &self.trace_id);
        text.push('-');
        hex_onto(&mut text, &self.span_id);
        text.push_str(if self.sampled { "-01" } else { "-00" });
        text
    }
}

/// Decodes hex digits (either case) into `out`, all of them or nothing.
/// Every span but a trace's root decodes its parent's ids: by table, and
/// the digits' validity checked once for all of them.
fn hex_into(digits: &[u8], out: &mut [u8]) -> Option<()> {
    /// A digit's value, or 0x10 for what is not a hex digit.
    const NIBBLE: [u8; 256] = {
        let mut table = [0x10u8; 256];
        let mut i = 0;
        while i < 10 {
            table[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            table[b'a' as usize + i] = 10 + i as u8;
            table[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        table
    };
    if digits.len() != out.len() * 2 {
        return None;
    }
    let mut invalid = 0;
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (high, low) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
        invalid |= high | low;
        *byte = high << 4 | (low & 0xf);
    }
    (invalid & 0x10 == 0).then_some(())
}

/// Appends `bytes` in lower-case hex (spans make several a span: no
/// formatting machinery).
fn hex_onto(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
}

/// The time, in nanoseconds since the Unix epoch: a span reads it as it
/// starts, at each event and as it ends. `SystemTime`'s subtraction and
/// the `u128` of its `Duration` took twice the instructions of the clock's
/// own read (BENCHMARKS.md, session 22).
fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// A clock's time in nanoseconds (`CLOCK_REALTIME`: since the Unix
/// epoch; `CLOCK_MONOTONIC`: as profilers stamp their samples).
#[inline]
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given, and
    // the clocks asked for are always there (a failure would leave it
    // zero).
    unsafe {
        libc::clock_gettime(clock, &mut now);
    }
    (now.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(now.tv_nsec as u64)
}

/// An instance span: its context (for its children and outgoing requests)
/// and its record while it is sampled and exported, which ends and goes
/// to the exporter when the span is dropped; with JSON log lines, also the
/// `tracing` span the lines inside it are written in.
pub struct Span {
    context: Option<Context>,
    record: Option<Record>,
    log: tracing::Span,
}

impl Span {
    /// The span of a start: a child of `parent` (the caller's
    /// `traceparent`, or the starting episode's), else a new trace's root.
    pub fn start(id: &str, orchestrator: &str, version: &str, parent: Option<Parent>) -> Span {
        Span::new(
            Name::Start,
            parent,
            |record| {
                record.attribute(Key::InstanceId, id.into());
                record.attribute(Key::Orchestrator, orchestrator.into());
                record.attribute(Key::AppVersion, version.into());
            },
            || tracing::info_span!(target: TARGET, parent: None, "start", instance_id = %id, orchestrator, app_version = %version),
        )
    }

    /// The span of an episode: a child of the instance's start span.
    // Its orchestrator and version are on the start span: every attribute
    // here costs on every episode.
    pub fn episode(id: &str, episode: i64, parent: Option<Parent>) -> Span {
        Span::new(
            Name::Episode,
            parent,
            |record| {
                record.attribute(Key::InstanceId, id.into());
                record.attribute(Key::Episode, episode.into());
            },
            || tracing::info_span!(target: TARGET, parent: None, "episode", instance_id = %id, episode),
        )
    }

    /// The span of an activity attempt: a child of the episode that
    /// scheduled it (or of the start span).
    pub fn activity(id: &str, activity: &str, attempt: u32, parent: Option<Parent>) -> Span {
        Span::new(
            Name::Activity,
            parent,
            |record| {
                record.attribute(Key::InstanceId, id.into());
                record.attribute(Key::Activity, activity.into());
                record.attribute(Key::Attempt, i64::from(attempt).into());
            },
            || tracing::info_span!(target: TARGET, parent: None, "activity", instance_id = %id, activity, attempt),
        )
    }

    fn new(
        name: Name,
        parent: Option<Parent>,
        attributes: impl FnOnce(&mut Record),
        log: impl FnOnce() -> tracing::Span,
    ) -> Span {
        let log = if LOG_SPANS.load(Ordering::Relaxed) {
            log()
        } else {
            tracing::Span::none()
        };
        let Some(exporter) = recording() else {
            return Span {
                context: None,
                record: None,
                log,
            };
        };
        let parent = parent.map(|p| p.0);
        let (trace_id, parent_span_id) = match parent {
            Some(parent) => (parent.trace_id, parent.span_id),
            None => (new_id(), [0; 8]),
        };
        let context = Context {
            trace_id,
            span_id: new_id(),
            sampled: exporter.sampler.samples(parent, &trace_id),
        };
        let record = context.sampled.then(|| {
            let mut record = Record::new(name, trace_id, context.span_id, parent_span_id, now_ns());
            attributes(&mut record);
            record
        });
        Span {
            context: Some(context),
            record,
            log,
        }
    }

    /// The `tracing` span to run its work in (lines written there name
    /// the instance); `Span::none()` unless log lines are JSON.
    pub fn log(&self) -> tracing::Span {
        self.log.clone()
    }

    /// Whether it is recorded (events and attributes are kept).
    pub fn recording(&self) -> bool {
        self.record.is_some()
    }

    /// Its context, to name it as a parent later.
    pub fn parent(&self) -> Option<Parent> {
        self.context.map(Parent)
    }

    /// An event (a timer set or fired, an event received).
    pub fn event(&mut self, name: Name, attributes: &[(Key, Value<'_>)]) {
        if let Some(record) = &mut self.record {
            record.event(name, now_ns(), attributes);
        }
    }

    /// Sets an attribute once its value is known.
    pub fn attribute<'a>(&mut self, key: Key, value: impl Into<Value<'a>>) {
        if let Some(record) = &mut self.record {
            record.attribute(key, value.into());
        }
    }

    /// Marks it failed (no description: errors may quote data).
    pub fn failed(&mut self) {
        if let Some(record) = &mut self.record {
            record.failed = true;
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let (Some(record), Some(exporter)) = (&self.record, exporting()) else {
            return;
        };
        exporter.push(record, now_ns());
    }
}

thread_local! {
    /// Where this thread draws ids from: a small generator seeded from the
    /// thread's cryptographic one. Ids must be unique, not unpredictable,
    /// and drawing them from the cryptographic one took 0.17 % of a busy
    /// host's CPU (BENCHMARKS.md, session 20; the OpenTelemetry SDK's id
    /// generator draws from a small one too).
    static IDS: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// A fresh random id (never all zeros, which means "none").
fn new_id<const N: usize>() -> [u8; N] {
    // Filled from whole words: an array drawn element by element takes a
    // word a byte.
    IDS.with_borrow_mut(|ids| loop {
        let mut id = [0; N];
        ids.fill_bytes(&mut id);
        if id != [0; N] {
            return id;
        }
    })
}

/// A traced span's context, to name it as a parent later: kept with an
/// instance and its activity calls as it is; as bytes or a W3C
/// `traceparent` only where it is stored or sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent(Context);

impl Parent {
    /// A W3C `traceparent`'s context, if it is a valid one.
    pub fn parse(traceparent: &str) -> Option<Parent> {
        Context::parse(traceparent).map(Parent)
    }

    /// Its W3C `traceparent`: the form it is sent in (and PostgreSQL keeps).
    pub fn traceparent(&self) -> String {
        self.0.traceparent()
    }

    /// Its 25 bytes (trace id, span id, flags): the form SQLite keeps it
    /// in, half the text's size and neither formatted nor parsed.
    pub fn to_bytes(&self) -> [u8; 25] {
        let mut bytes = [0; 25];
        bytes[..16].copy_from_slice(&self.0.trace_id);
        bytes[16..24].copy_from_slice(&self.0.span_id);
        bytes[24] = u8::from(self.0.sampled);
        bytes
    }

    /// What `to_bytes` wrote, if it is a valid context.
    pub fn from_bytes(bytes: &[u8]) -> Option<Parent> {
        let bytes: &[u8; 25] = bytes.try_into().ok()?;
        let context = Context {
            trace_id: bytes[..16].try_into().expect("16 bytes"),
            span_id: bytes[16..24].try_into().expect("8 bytes"),
            sampled: bytes[24] & 1 == 1,
        };
        context.valid().map(Parent)
    }
}

/// The W3C `traceparent` a request carried, if traces are on and it is a
/// valid one.
pub fn incoming(headers: &http::HeaderMap) -> Option<Parent> {
    recording()?;
    Parent::parse(headers.get("traceparent")?.to_str().ok()?)
}

/// Which new traces are recorded (`OTEL_TRACES_SAMPLER`, with
/// `OTEL_TRACES_SAMPLER_ARG` for the ratio ones), as the specification
/// names them. The default, `parentbased_always_on`, records every trace
/// whose caller did not say otherwise.
#[derive(Clone, Debug, PartialEq)]
enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// Traces whose id falls below the ratio, decided from the id alone,
    /// so every span of an instance gets the same answer.
    Ratio(f64),
    /// The parent's decision where there is a parent, else the root's.
    ParentBased(Box<Sampler>),
}

impl Sampler {
    fn samples(&self, parent: Option<Context>, trace_id: &[u8; 16]) -> bool {
        match self {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::Ratio(ratio) => {
                // The specification's test: the id's low 8 bytes against
                // the ratio's share of the 63-bit range.
                let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes")) >> 1;
                (low as f64) < ratio * (1u64 << 63) as f64
            }
            Sampler::ParentBased(root) => match parent {
                Some(parent) => parent.sampled,
                None => root.samples(None, trace_id),
            },
        }
    }

    fn parse(name: &str, arg: Option<&str>) -> anyhow::Result<Sampler> {
        let ratio = || -> anyhow::Result<f64> {
            let Some(arg) = arg else { return Ok(1.0) };
            match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => anyhow::bail!("OTEL_TRACES_SAMPLER_ARG {arg:?} is not a ratio from 0 to 1"),
            }
        };
        Ok(match name.trim() {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::Ratio(ratio()?),
            "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            "parentbased_traceidratio" => Sampler::ParentBased(Box::new(Sampler::Ratio(ratio()?))),
            other => anyhow::bail!(
                "OTEL_TRACES_SAMPLER {other:?} is not one of always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = Context::parse(text).unwrap();
        assert!(parsed.sampled);
        assert_eq!(parsed.traceparent(), text);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!Context::parse(unsampled).unwrap().sampled);
        assert!(
            Context::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            Context::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01").is_none()
        );
        assert!(
            Context::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_none()
        );
        assert!(
            Context::parse("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            Context::parse("00-4bf92f3577b34da6a3ce929d0e0e4736+00f067aa0ba902b7-01").is_none()
        );
        assert!(
            Context::parse(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ").is_some()
        );
        assert!(Context::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1").is_none());
        assert!(Context::parse("garbage").is_none());
    }

    #[test]
    fn contexts_round_trip_through_their_bytes() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = Parent::parse(text).unwrap();
        let bytes = parent.to_bytes();
        assert_eq!(Parent::from_bytes(&bytes), Some(parent));
        assert_eq!(Parent::from_bytes(&bytes).unwrap().traceparent(), text);
        let unsampled = Parent::parse(&text.replace("-01", "-00")).unwrap();
        assert!(!Parent::from_bytes(&unsampled.to_bytes()).unwrap().0.sampled);
        assert_eq!(Parent::from_bytes(&bytes[..24]), None);
        assert_eq!(Parent::from_bytes(&[0; 25]), None);
    }

    #[test]
    fn span_times_are_the_wall_clock() {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let ours = now_ns();
        assert!(ours.abs_diff(wall) < 1_000_000_000, "{ours} against {wall}");
    }

    #[test]
    fn each_thread_draws_ids_of_its_own() {
        // Each thread seeds its own generator: two threads seeded alike
        // would give their spans the same ids.
        let draw = || (0..1000).map(|_| new_id::<8>()).collect::<Vec<_>>();
        let mut ids = draw();
        ids.extend(std::thread::spawn(draw).join().unwrap());
        assert!(ids.iter().all(|id| *id != [0; 8]));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 2000, "every id drawn once");
    }

    #[test]
    fn samplers_follow_the_specification() {
        let parent = |sampled| {
            Some(Context {
                trace_id: [1; 16],
                span_id: [2; 8],
                sampled,
            })
        };
        let default = Sampler::parse("parentbased_always_on", None).unwrap();
        assert!(default.samples(None, &[7; 16]));
        assert!(!default.samples(parent(false), &[7; 16]));
        assert!(default.samples(parent(true), &[7; 16]));
        assert!(!Sampler::parse("always_off", None)
            .unwrap()
            .samples(parent(true), &[7; 16]));
        let half = Sampler::parse("traceidratio", Some("0.5")).unwrap();
        let mut low = [0u8; 16];
        low[8] = 0x3f;
        let mut high = [0u8; 16];
        high[8] = 0xc0;
        assert!(half.samples(None, &low));
        assert!(!half.samples(None, &high));
        let ratio = Sampler::parse("parentbased_traceidratio", Some("0")).unwrap();
        assert!(!ratio.samples(None, &low));
        assert!(ratio.samples(parent(true), &low));
        assert!(Sampler::parse("traceidratio", Some("2")).is_err());
        assert!(Sampler::parse("jaeger_remote", None).is_err());
    }
}
