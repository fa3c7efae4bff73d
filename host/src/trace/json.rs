//! `--log-format json`: one JSON object a line, `timestamp`, `level`,
//! `target`, `message` and the event's fields at the top level, and
//! `instance_id` whenever the line is about an instance: from the event's
//! own fields (`instance_id`, or `instance`), else from the innermost
//! instance span it was emitted in.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The instance id a span was made with (its `instance_id` field).
struct InstanceId(String);

/// Notes each span's `instance_id`, for the lines emitted inside it.
pub struct InstanceIds;

impl<S> Layer<S> for InstanceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut found = FindInstance(None);
        attrs.record(&mut found);
        if let (Some(instance), Some(span)) = (found.0, ctx.span(id)) {
            span.extensions_mut().insert(InstanceId(instance));
        }
    }
}

struct FindInstance(Option<String>);

impl Visit for FindInstance {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "instance_id" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "instance_id" {
            // `%id` records as Display through Debug: no quotes.
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// The line format.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut fields = fields.0;
        if let Some(message) = fields.remove("message") {
            line.insert("message".into(), message);
        }
        if let Some(instance) = fields.remove("instance") {
            fields.entry("instance_id").or_insert(instance);
        }
        if !fields.contains_key("instance_id") {
            let from_span = ctx.event_scope().and_then(|scope| {
                scope
                    .into_iter()
                    .find_map(|span| span.extensions().get::<InstanceId>().map(|id| id.0.clone()))
            });
            if let Some(instance) = from_span {
                line.insert("instance_id".into(), instance.into());
            }
        }
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), span.name().into());
        }
        for (name, value) in fields {
            line.entry(name).or_insert(value);
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// An event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
