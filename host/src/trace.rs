//! Traces and logs: the `tracing` subscriber a server process installs,
//! OpenTelemetry traces over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and the spans an
//! instance's work runs in.
//!
//! Every instance has a trace: its start span (child of the `traceparent`
//! the start request carried, else the root of a new trace) is stored with
//! the instance as a W3C `traceparent` (`instances.trace_context`), so its
//! later spans join it on any host and after any restart: one span per
//! episode and per activity attempt, each a child of the start span (an
//! activity scheduled by an episode this host ran: of that episode's span).
//! A sub-orchestration's start span is a child of the episode that started
//! it. Timers and events are events on the episode spans. Attributes name
//! the instance, its orchestrator, its app version, an activity and its
//! attempt and outcome, never inputs, outputs or event data.
//!
//! Instance spans are made only when something reads them (the exporter,
//! or `--log-format json`, whose lines take the instance id from them):
//! otherwise `instance_span!` is `Span::none()` after one load of a flag.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

mod json;

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

static SPANS: AtomicBool = AtomicBool::new(false);

/// Whether instance spans are made (someone reads them).
#[inline]
pub fn on() -> bool {
    SPANS.load(Ordering::Relaxed)
}

/// An instance span (`tracing::info_span!` with target `TARGET`), or
/// `Span::none()` when nothing reads them.
#[macro_export]
macro_rules! instance_span {
    ($($fields:tt)*) => {
        if $crate::trace::on() {
            ::tracing::info_span!(target: "durango::instance", parent: None, $($fields)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// What a server process installed; `shutdown` exports the spans still
/// buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter (waits for the
    /// export, up to its time-out).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown() {
                eprintln!("durango: exporting the last spans failed: {error}");
            }
        }
    }
}

const DEFAULT_FILTER: &str = "info,wasmtime=warn,cranelift=warn";

/// Installs the process's subscriber: log lines on stderr in `format`,
/// and the OTLP exporter when the environment names an endpoint.
pub fn init(format: LogFormat) -> Telemetry {
    let provider = match otlp_provider() {
        Ok(provider) => provider,
        Err(error) => {
            eprintln!("durango: traces are off: {error}");
            None
        }
    };
    let user_filter = EnvFilter::try_from_default_env().ok();
    if provider.is_none() && format == LogFormat::Text {
        // As before traces existed: nothing more than the log lines.
        tracing_subscriber::fmt()
            .with_env_filter(user_filter.unwrap_or_else(|| DEFAULT_FILTER.into()))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
        return Telemetry { provider: None };
    }
    SPANS.store(true, Ordering::Relaxed);
    let fmt_filter = user_filter.unwrap_or_else(|| match format {
        // Text lines carry the instance as a field already; instance spans
        // would only repeat it in a prefix.
        LogFormat::Text => format!("{DEFAULT_FILTER},{TARGET}=off").into(),
        LogFormat::Json => DEFAULT_FILTER.into(),
    });
    let fmt_layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(fmt_filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(json::JsonLines)
            .with_writer(std::io::stderr)
            .with_filter(fmt_filter)
            .boxed(),
    };
    let instance_ids = (format == LogFormat::Json).then_some(json::InstanceIds);
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("durango"))
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_target(false)
            .with_context_activation(false)
            .with_tracked_inactivity(false)
            // Instance spans only, and a level ceiling: `filter_fn` would
            // leave the ceiling at TRACE, and every debug and trace call
            // site in the process (wasmtime's `log` ones too) would be
            // evaluated on every hit.
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(TARGET, tracing::Level::INFO),
            )
    });
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(instance_ids)
        .with(otel_layer)
        .init();
    Telemetry { provider }
}

/// The tracer provider, when the environment names an OTLP endpoint.
fn otlp_provider() -> anyhow::Result<Option<SdkTracerProvider>> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    // The specification's default is http/protobuf (the crate's, with
    // JSON compiled in, would be JSON).
    let protocol = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()));
    let protocol = match protocol.as_deref().map(str::trim) {
        None | Some("http/protobuf") => Protocol::HttpBinary,
        Some("http/json") => Protocol::HttpJson,
        Some(other) => anyhow::bail!(
            "OTLP protocol {other:?} is not supported: use http/protobuf (the default) or http/json"
        ),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(UreqClient::new())
        .with_protocol(protocol)
        .build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name("durango");
    }
    // Batches leave from the SDK's own thread (OTEL_BSP_* tune them).
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    Ok(Some(provider))
}

/// The exporter's HTTP client: ureq, blocking, on the batch processor's
/// thread (which it moves behind the writer, as tokio's threads are).
#[derive(Debug)]
struct UreqClient {
    agent: ureq::Agent,
}

impl UreqClient {
    fn new() -> UreqClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        UreqClient { agent }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for UreqClient {
    async fn send_bytes(
        &self,
        request: http::Request<opentelemetry_http::Bytes>,
    ) -> Result<http::Response<opentelemetry_http::Bytes>, opentelemetry_http::HttpError> {
        stand_back();
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, &body[..]);
        let mut response = self.agent.run(request)?;
        let mut answer = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            answer = answer.header(name, value);
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()?;
        Ok(answer.body(opentelemetry_http::Bytes::from(body))?)
    }
}

/// Lowers the calling thread's priority once, as tokio's threads are (see
/// main.rs): exporting must not keep the SQLite writer from a core.
fn stand_back() {
    #[cfg(target_os = "linux")]
    {
        thread_local!(static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        LOWERED.with(|lowered| {
            if !lowered.replace(true) {
                // SAFETY: setpriority only reads its arguments; who = 0 is
                // the calling thread.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, 0, 5);
                }
            }
        });
    }
}

/// The W3C `traceparent` a request carried, if it is a valid one.
pub fn incoming(headers: &http::HeaderMap) -> Option<String> {
    if !on() {
        return None;
    }
    let context =
        TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    let span = context.span();
    let remote = span.span_context();
    remote.is_valid().then(|| format_traceparent(remote))
}

/// The `traceparent` naming `span` as the parent, if it is traced.
pub fn traceparent_of(span: &Span) -> Option<String> {
    if span.is_none() {
        return None;
    }
    let context = span.context();
    let span = context.span();
    let own = span.span_context();
    own.is_valid().then(|| format_traceparent(own))
}

/// A traced span's context, to name it as a parent later.
#[derive(Clone)]
pub struct Parent(SpanContext);

impl Parent {
    pub fn of(span: &Span) -> Option<Parent> {
        if span.is_none() {
            return None;
        }
        let context = span.context();
        let own = context.span().span_context().clone();
        own.is_valid().then_some(Parent(own))
    }

    /// Its W3C `traceparent`.
    pub fn header(&self) -> String {
        format_traceparent(&self.0)
    }
}

/// Makes `span` a child of the span `traceparent` names (stored with an
/// instance or an activity call). Call before the span is entered.
pub fn set_parent(span: &Span, traceparent: Option<&str>) {
    let Some(parent) = traceparent.and_then(parse_traceparent) else {
        return;
    };
    let context = opentelemetry::Context::new().with_remote_span_context(parent);
    let _ = span.set_parent(context);
}

/// An event (a timer set or fired, an event received) on `span`.
pub fn event(span: &Span, name: &'static str, attributes: Vec<opentelemetry::KeyValue>) {
    if !span.is_none() {
        span.add_event(name, attributes);
    }
}

/// Sets an attribute on `span` (once its value is known).
pub fn attribute(span: &Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if !span.is_none() {
        span.set_attribute(key, value);
    }
}

/// Marks `span` as failed (no description: errors may quote data).
pub fn failed(span: &Span) {
    if !span.is_none() {
        span.set_status(opentelemetry::trace::Status::error(""));
    }
}

fn format_traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

fn parse_traceparent(text: &str) -> Option<SpanContext> {
    let mut parts = text.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let trace = opentelemetry::trace::TraceId::from_hex(trace).ok()?;
    let span = opentelemetry::trace::SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        trace,
        span,
        opentelemetry::trace::TraceFlags::new(flags),
        true,
        Default::default(),
    );
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = parse_traceparent(text).unwrap();
        assert_eq!(format_traceparent(&parsed), text);
        assert!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_none()
        );
        assert!(parse_traceparent("garbage").is_none());
    }
}
