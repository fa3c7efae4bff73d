//! The span exporter: a span's record is copied where it ends into its
//! thread's buffer (record.rs), whose chunks go onto a bounded queue; a
//! thread of its own takes a batch's worth off, wraps it in a request
//! (otlp.rs) and posts it to the collector over OTLP/HTTP. Only bytes
//! cross threads, in buffers that are reused (records that owned
//! allocations and were freed on the export thread cost the allocator
//! more than the spans themselves). Its settings are the OpenTelemetry specification's
//! environment variables, read once at start.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::otlp::{Encoder, Format};
use super::record::Record;
use super::Sampler;

/// What the environment says about exporting.
#[derive(Debug)]
pub struct Settings {
    url: String,
    format: Format,
    headers: Vec<(String, String)>,
    timeout: Duration,
    resource: Vec<(String, String)>,
    schedule_delay: Duration,
    max_queue: usize,
    max_batch: usize,
    sampler: Sampler,
}

impl Settings {
    /// `None` when no endpoint is set (or `OTEL_SDK_DISABLED=true`).
    pub fn from_env() -> anyhow::Result<Option<Settings>> {
        Settings::from(|name| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        })
    }

    fn from(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Settings>> {
        // The trace-specific variable wins over the general one.
        let either = |specific: &str, general: &str| var(specific).or_else(|| var(general));
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let url = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => url,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        if !url.starts_with("http://") {
            anyhow::bail!(
                "the OTLP endpoint {url:?} must be http:// (a collector on the host or beside it)"
            );
        }
        let format = match either(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        )
        .as_deref()
        {
            None | Some("http/protobuf") => Format::Protobuf,
            Some("http/json") => Format::Json,
            Some(other) => anyhow::bail!(
                "OTLP protocol {other:?} is not supported: use http/protobuf (the default) or http/json"
            ),
        };
        let headers = either(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        )
        .map(|list| pairs(&list, "OTEL_EXPORTER_OTLP_HEADERS"))
        .transpose()?
        .unwrap_or_default();
        let millis = |name: &str, value: Option<String>, default: u64| match value {
            None => Duration::from_millis(default),
            Some(text) => {
                match text.parse::<u64>() {
                    Ok(ms) => Duration::from_millis(ms),
                    Err(_) => {
                        eprintln!("durango: {name} {text:?} is not a number of milliseconds; using {default}");
                        Duration::from_millis(default)
                    }
                }
            }
        };
        let count = |name: &str, default: usize| match var(name) {
            None => default,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    eprintln!("durango: {name} {text:?} is not a positive number; using {default}");
                    default
                }
            },
        };
        let timeout = millis(
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            either(
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            10_000,
        );
        let mut resource = var("OTEL_RESOURCE_ATTRIBUTES")
            .map(|list| pairs(&list, "OTEL_RESOURCE_ATTRIBUTES"))
            .transpose()?
            .unwrap_or_default();
        let service = var("OTEL_SERVICE_NAME").or_else(|| {
            resource
                .iter()
                .find(|(key, _)| key == "service.name")
                .map(|(_, name)| name.clone())
        });
        resource.retain(|(key, _)| key != "service.name");
        resource.insert(
            0,
            (
                "service.name".into(),
                service.unwrap_or_else(|| "durango".into()),
            ),
        );
        let max_queue = count("OTEL_BSP_MAX_QUEUE_SIZE", MAX_QUEUE);
        let max_batch = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", MAX_BATCH).min(max_queue);
        let sampler = Sampler::parse(
            var("OTEL_TRACES_SAMPLER")
                .as_deref()
                .unwrap_or("parentbased_always_on"),
            var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )?;
        Ok(Some(Settings {
            url,
            format,
            headers,
            timeout,
            resource,
            schedule_delay: millis(
                "OTEL_BSP_SCHEDULE_DELAY",
                var("OTEL_BSP_SCHEDULE_DELAY"),
                5000,
            ),
            max_queue,
            max_batch,
            sampler,
        }))
    }
}

/// The spans a request carries at most, unless `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
/// says otherwise: sixteen times the specification's 512, as many as the
/// OpenTelemetry Collector's own batches. A busy host ends tens of
/// thousands of spans a second, and what a request costs it (its round
/// trip, the export thread's and the collector's wake-ups) weighs more
/// than sending the spans: hello lost 8.6 % of its rate to traces with
/// requests of 512 spans, 6.7 % with 1,024, 4.8-5.0 % with 4,096, 3.9 %
/// with 8,192 and 3.8 % with 16,384 (BENCHMARKS.md, session 24). About
/// 1.3 MB of hello's spans, where the Collector's receivers take up to
/// 20 MiB.
const MAX_BATCH: usize = 8192;

/// The spans queued at most before new ones are dropped (unless
/// `OTEL_BSP_MAX_QUEUE_SIZE` says otherwise): four batches, as the
/// specification's 2,048 are four of its batches.
const MAX_QUEUE: usize = 4 * MAX_BATCH;

/// `key=value,key=value` with percent-encoded values (the W3C baggage
/// form the specification uses for headers and resource attributes).
fn pairs(list: &str, name: &str) -> anyhow::Result<Vec<(String, String)>> {
    list.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("{name}: {:?} is not key=value", item.trim()))?;
            let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
            Ok((key.trim().to_string(), value.into_owned()))
        })
        .collect()
}

/// The queue between the spans' threads and the export thread.
pub struct Exporter {
    pub(super) sampler: Sampler,
    encoder: Encoder,
    queue: Mutex<Queue>,
    /// Told when a batch's worth is queued or the process stops.
    ready: Condvar,
    max_queue: usize,
    max_batch: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Spans ended on one thread (`Record::end_onto`), and how many.
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    spans: usize,
}

#[derive(Default)]
struct Queue {
    /// Handed-over chunks, oldest first.
    chunks: VecDeque<Chunk>,
    /// Spans in `chunks`.
    queued: usize,
    /// Buffers the export thread is done with, for reuse, and their
    /// capacity in bytes.
    spare: Vec<Vec<u8>>,
    spare_bytes: usize,
    /// Spans refused since the last report: the queue was full.
    dropped: u64,
    stopping: bool,
}

impl Queue {
    /// A buffer for a thread's next chunk: a spare one, else a new one
    /// with room.
    fn room(&mut self) -> Vec<u8> {
        match self.spare.pop() {
            Some(spare) => {
                self.spare_bytes -= spare.capacity();
                spare
            }
            None => Vec::with_capacity(CHUNK_ROOM),
        }
    }

    /// Keeps a buffer the export thread is done with, while the spares
    /// stay within `SPARE_BYTES`.
    fn reuse(&mut self, mut bytes: Vec<u8>) {
        if self.spare_bytes + bytes.capacity() <= SPARE_BYTES {
            bytes.clear();
            self.spare_bytes += bytes.capacity();
            self.spare.push(bytes);
        }
    }
}

/// The capacity of emptied buffers kept for reuse. A worker hands its
/// spans over whenever it idles: a batch is many chunks (hello at full
/// load: chunks of 35-40 spans, a few kilobytes, about two hundred to a
/// batch; fewer spans each when the host is less busy). Every chunk must
/// find a buffer with room, or the worker grows a new one (allocations,
/// copies) that the export thread then frees (a free from another thread,
/// which the worker's allocator pays for again later). This keeps a
/// batch's worth of hello's chunks and more (BENCHMARKS.md, session 20: a
/// run of 96,000 spans made 108-192 new buffers and freed none).
const SPARE_BYTES: usize = 4 << 20;

/// The room a new chunk buffer starts with: a few spans' worth, so that it
/// does not grow span by span.
const CHUNK_ROOM: usize = 2048;

/// Spans a thread that hands over when it idles (`flush_thread`) keeps
/// before it hands them over anyway.
const LOCAL_SPANS: usize = 64;

/// The spans this thread ended and has not handed over yet. A span is
/// copied where it ends into its thread's own buffer: the hosts' workers
/// end thousands a second, and one lock and one hand-over for a chunk of
/// them costs a fraction of one each.
#[derive(Default)]
struct Local {
    chunk: Chunk,
    /// Whether the thread hands over when it idles (set by its first
    /// `flush_thread`); other threads hand over each span at once.
    keeps: bool,
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Some(exporter) = super::exporting() {
            exporter.hand_over(&mut self.chunk);
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

impl Exporter {
    /// Makes the exporter `place` holds and starts its thread (nothing if
    /// there already is one).
    pub fn start(settings: Settings, place: &'static std::sync::OnceLock<Exporter>) {
        if place.set(Exporter::new(&settings)).is_err() {
            return;
        }
        let exporter = place.get().expect("just set");
        let poster = Poster::new(settings, exporter.encoder.content_type());
        let thread = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || exporter.run(poster))
            .expect("the export thread starts");
        *exporter.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
    }

    fn new(settings: &Settings) -> Exporter {
        Exporter {
            sampler: settings.sampler.clone(),
            encoder: Encoder::new(settings.format, &settings.resource),
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            max_queue: settings.max_queue,
            max_batch: settings.max_batch,
            thread: Mutex::new(None),
        }
    }

    /// Copies a span that ended at `end_ns` onto this thread's chunk, and
    /// hands the chunk over when the thread does not keep one or it is
    /// full.
    pub fn push(&self, record: &Record, end_ns: u64) {
        let kept = LOCAL.try_with(|local| {
            let mut local = local.borrow_mut();
            record.end_onto(end_ns, &mut local.chunk.bytes);
            local.chunk.spans += 1;
            if !local.keeps || local.chunk.spans >= LOCAL_SPANS {
                self.hand_over(&mut local.chunk);
            }
        });
        if kept.is_err() {
            // The thread is ending: its chunk is gone already.
            let mut chunk = Chunk::default();
            record.end_onto(end_ns, &mut chunk.bytes);
            chunk.spans = 1;
            self.hand_over(&mut chunk);
        }
    }

    /// Hands this thread's spans over now, and from now on keeps spans
    /// until the next call (or `LOCAL_SPANS` of them): tokio's workers call
    /// it whenever they idle and as they stop.
    pub fn flush_thread(&self) {
        let _ = LOCAL.try_with(|local| {
            let mut local = local.borrow_mut();
            local.keeps = true;
            self.hand_over(&mut local.chunk);
        });
    }

    /// Queues `chunk`'s spans (refused and counted when the queue is full,
    /// so a slow collector never holds up an instance or grows memory) and
    /// leaves it empty.
    fn hand_over(&self, chunk: &mut Chunk) {
        if chunk.spans == 0 {
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.queued + chunk.spans > self.max_queue {
            queue.dropped += chunk.spans as u64;
            chunk.bytes.clear();
            chunk.spans = 0;
            return;
        }
        let before = queue.queued;
        queue.queued += chunk.spans;
        let spare = queue.room();
        let full = std::mem::replace(
            chunk,
            Chunk {
                bytes: spare,
                spans: 0,
            },
        );
        queue.chunks.push_back(full);
        if before < self.max_batch && queue.queued >= self.max_batch {
            self.ready.notify_one();
        }
    }

    /// Exports what is queued, then stops the thread.
    pub fn shutdown(&self) {
        self.flush_thread();
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stopping = true;
        self.ready.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    fn run(&self, mut poster: Poster) {
        stand_back();
        let mut batch = Vec::new();
        loop {
            let (dropped, stopping) = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let due = Instant::now() + poster.schedule_delay;
                while queue.queued < self.max_batch && !queue.stopping {
                    let now = Instant::now();
                    if now >= due {
                        break;
                    }
                    queue = self
                        .ready
                        .wait_timeout(queue, due - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                // A batch's worth (chunks are whole: it may go a chunk
                // over), else (the delay is up, or stopping) what there is.
                let mut spans = 0;
                while spans < self.max_batch {
                    let Some(chunk) = queue.chunks.pop_front() else {
                        break;
                    };
                    spans += chunk.spans;
                    batch.push(chunk);
                }
                queue.queued -= spans;
                (std::mem::take(&mut queue.dropped), queue.stopping)
            };
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "spans dropped: the export queue was full (OTEL_BSP_MAX_QUEUE_SIZE)"
                );
            }
            let sent = batch.is_empty() || poster.post(&self.encoder, &batch);
            let left = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                for chunk in batch.drain(..) {
                    queue.reuse(chunk.bytes);
                }
                queue.queued
            };
            // Stopping: the rest goes out unless the collector failed us
            // (a stop must not wait a time-out per batch).
            if stopping && (left == 0 || !sent) {
                if left > 0 {
                    eprintln!("durango: {left} spans not exported: the collector failed");
                }
                return;
            }
        }
    }
}

/// The HTTP side: ureq, blocking, on the export thread.
struct Poster {
    agent: ureq::Agent,
    url: String,
    content_type: &'static str,
    headers: Vec<(String, String)>,
    schedule_delay: Duration,
    /// A request's head (or its whole body in JSON), kept from one batch
    /// to the next.
    head: Vec<u8>,
    /// Whether the last post failed: failures are reported once a run.
    failing: bool,
}

impl Poster {
    fn new(settings: Settings, content_type: &'static str) -> Poster {
        // The time-out bounds each phase but the name's lookup: with a
        // bound on the lookup ureq resolves on a new thread, and a thread
        // a batch cost the host more CPU than the spans themselves (thread
        // set-up and a fresh allocator heap every time). The export thread
        // is the only one a slow lookup could hold up.
        let limit = Some(settings.timeout);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(limit)
            .timeout_send_request(limit)
            .timeout_send_body(limit)
            .timeout_recv_response(limit)
            .timeout_recv_body(limit)
            .build()
            .new_agent();
        Poster {
            agent,
            url: settings.url,
            content_type,
            headers: settings.headers,
            schedule_delay: settings.schedule_delay,
            head: Vec::new(),
            failing: false,
        }
    }

    /// Posts a batch; whether the collector took it. A failed batch is
    /// dropped (it would only grow behind a collector that is down).
    fn post(&mut self, encoder: &Encoder, batch: &[Chunk]) -> bool {
        let chunks: Vec<&[u8]> = batch.iter().map(|chunk| &chunk.bytes[..]).collect();
        let parts = encoder.request(&mut self.head, &chunks);
        let length: usize = parts.iter().map(|part| part.len()).sum();
        let mut request = self
            .agent
            .post(&self.url)
            .header("content-type", self.content_type)
            .header("content-length", length);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let mut body = Parts::new(parts);
        let outcome = match request.send(ureq::SendBody::from_reader(&mut body)) {
            Ok(mut response) => {
                // Read to the end, so the connection is reused.
                let _ = response
                    .body_mut()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_vec();
                let status = response.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("the collector answered {status}"))
                }
            }
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(url = %self.url, "exporting spans again");
                }
                true
            }
            Err(error) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(url = %self.url, %error, spans = batch.iter().map(|c| c.spans).sum::<usize>(), "cannot export spans; dropping them until the collector answers");
                }
                false
            }
        }
    }
}

/// A request's parts read as one body: ureq copies them into its own
/// buffer, a buffer's worth at a time, as it sends.
struct Parts<'a> {
    parts: std::vec::IntoIter<&'a [u8]>,
    part: &'a [u8],
}

impl<'a> Parts<'a> {
    fn new(parts: Vec<&'a [u8]>) -> Parts<'a> {
        Parts {
            parts: parts.into_iter(),
            part: &[],
        }
    }
}

impl std::io::Read for Parts<'_> {
    /// Fills `out` from as many parts as it takes (a read a chunk would be
    /// a write a chunk, hundreds a request).
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < out.len() {
            if self.part.is_empty() {
                match self.parts.next() {
                    Some(part) => self.part = part,
                    None => break,
                }
            }
            filled += self.part.read(&mut out[filled..])?;
        }
        Ok(filled)
    }
}

/// Gives the export thread the lowest priority: it encodes and posts in
/// the time the host's own threads leave (tokio's run at 5, the SQLite
/// writer at 0, see main.rs), and still gets a small share of a busy core.
fn stand_back() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its arguments; who = 0 is the calling
    // thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_read_as_one_body_filling_each_read() {
        use std::io::Read;
        let parts: Vec<&[u8]> = vec![b"head", b"", b"chunk one", b"2"];
        let mut whole = Vec::new();
        Parts::new(parts.clone()).read_to_end(&mut whole).unwrap();
        assert_eq!(whole, b"headchunk one2");
        // A read takes from as many parts as fit, not one part a read.
        let mut body = Parts::new(parts);
        let mut out = [0; 6];
        assert_eq!(body.read(&mut out).unwrap(), 6);
        assert_eq!(&out, b"headch");
        let mut rest = [0; 100];
        assert_eq!(body.read(&mut rest).unwrap(), 8);
        assert_eq!(&rest[..8], b"unk one2");
        assert_eq!(body.read(&mut rest).unwrap(), 0, "the end");
    }

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Option<Settings>> {
        Settings::from(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn the_environment_names_the_endpoint_and_its_settings() {
        assert!(settings(&[]).unwrap().is_none());
        let base = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(base.url, "http://collector:4318/v1/traces");
        assert_eq!(base.format, Format::Protobuf);
        assert_eq!(
            base.resource,
            vec![("service.name".into(), "durango".into())]
        );
        assert_eq!((base.max_queue, base.max_batch), (32_768, 8192));
        assert_eq!(base.schedule_delay, Duration::from_secs(5));
        let full = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://other:4318/traces",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=a%20b, tenant=7"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=verifier,deployment.environment=prod",
            ),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
            ("OTEL_BSP_SCHEDULE_DELAY", "not a number"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(full.url, "http://other:4318/traces");
        assert_eq!(full.format, Format::Json);
        assert_eq!(
            full.headers,
            vec![
                ("x-api-key".into(), "a b".into()),
                ("tenant".into(), "7".into())
            ]
        );
        assert_eq!(
            full.resource,
            vec![
                ("service.name".into(), "verifier".into()),
                ("deployment.environment".into(), "prod".into())
            ]
        );
        assert_eq!((full.max_queue, full.max_batch), (100, 100));
        assert_eq!(full.schedule_delay, Duration::from_secs(5));
        let named = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SERVICE_NAME", "sms"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=verifier"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(named.resource, vec![("service.name".into(), "sms".into())]);
        assert!(settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true")
        ])
        .unwrap()
        .is_none());
    }

    fn queued(exporter: &Exporter) -> (usize, u64) {
        let queue = exporter.queue.lock().unwrap();
        (queue.queued, queue.dropped)
    }

    fn record() -> Record {
        let mut record = Record::new(super::super::Name::Episode, [1; 16], [2; 8], [3; 8], 1);
        record.attribute(super::super::Key::InstanceId, "i".into());
        record
    }

    #[test]
    fn a_worker_hands_its_spans_over_in_chunks_and_a_full_queue_refuses_them() {
        let exporter = Exporter::new(
            &settings(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ])
            .unwrap()
            .unwrap(),
        );
        let push = |spans: usize| (0..spans).for_each(|_| exporter.push(&record(), 2));
        // A thread of its own: what a thread keeps is per thread.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // (idle first, spans pushed, (queued, dropped) after, why)
                let steps = [
                    (
                        false,
                        1,
                        (1, 0),
                        "a thread that never idled hands each span over",
                    ),
                    (true, 10, (1, 0), "a worker keeps its spans until it idles"),
                    (true, 0, (11, 0), "and hands them over then"),
                    (
                        false,
                        LOCAL_SPANS,
                        (75, 0),
                        "or once it holds a chunk's worth",
                    ),
                    (
                        false,
                        LOCAL_SPANS,
                        (75, 64),
                        "past the queue's bound a chunk is refused",
                    ),
                ];
                for (idle, spans, expected, what) in steps {
                    if idle {
                        exporter.flush_thread();
                    }
                    push(spans);
                    assert_eq!(queued(&exporter), expected, "{what}");
                }
            });
        });
        let queue = exporter.queue.lock().unwrap();
        let spans: usize = queue
            .chunks
            .iter()
            .map(|c| super::super::proto::fields(&c.bytes).count())
            .sum();
        assert_eq!(spans, 75, "the queue holds the spans' records");
    }

    #[test]
    fn chunks_take_emptied_buffers_back_within_the_bound() {
        let mut queue = Queue::default();
        let fresh = queue.room();
        assert!(fresh.capacity() >= CHUNK_ROOM, "a new buffer has room");
        let mut used = Vec::with_capacity(5000);
        used.extend_from_slice(b"spans");
        let kept = used.as_ptr();
        queue.reuse(used);
        let again = queue.room();
        assert_eq!(again.as_ptr(), kept, "the emptied buffer comes back");
        assert!(again.is_empty() && again.capacity() >= 5000);
        assert_eq!(queue.spare_bytes, 0);
        queue.reuse(Vec::with_capacity(SPARE_BYTES));
        queue.reuse(Vec::with_capacity(64));
        assert_eq!(queue.spare.len(), 1, "no more than SPARE_BYTES are kept");
        assert_eq!(queue.spare_bytes, queue.spare[0].capacity());
    }

    #[test]
    fn what_cannot_work_is_refused_at_start() {
        for vars in [
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")][..],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
            ],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_TRACES_SAMPLER", "sometimes"),
            ],
        ] {
            assert!(settings(vars).is_err(), "{vars:?}");
        }
    }
}
