//! The state a guest's store carries, and the host calls it may make. One
//! component serves both roles: as an orchestrator it sees only the replay
//! engine; as an activity it sees settings and real I/O.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::bindings::durango::orchestration::{orchestration, settings, types};
use super::bindings::LogLevel;
use super::sandbox::{self, ActivityRandom, OrchestrationClock, RandomKey};
use super::AllowedSettings;
use crate::engine::history::{RetryPolicy, Sender};
use crate::engine::replay::{Cue, Replay};
use crate::links::LinkSigner;
use crate::settings::Settings;

/// Largest custom status (JSON) an orchestrator may set, as Durable
/// Functions allows.
pub const CUSTOM_STATUS_LIMIT: usize = 16 * 1024;

/// Keep at most this much of what a guest prints (for its failure message).
pub const OUTPUT_CAPACITY: usize = 64 * 1024;

pub enum Role {
    Orchestrator {
        replay: Box<Replay>,
        clock: OrchestrationClock,
    },
    Activity(ActivityCall),
}

impl Role {
    /// The WASI this role sees; `output` collects what the guest prints.
    pub fn wasi(&self, output: &MemoryOutputPipe) -> WasiCtx {
        match self {
            Role::Orchestrator { replay, clock } => {
                sandbox::orchestrator_wasi(replay.instance_id(), clock, output)
            }
            Role::Activity(call) => sandbox::activity_wasi(output, &call.random),
        }
    }

    pub fn metric(&self) -> crate::metrics::Role {
        match self {
            Role::Orchestrator { .. } => crate::metrics::Role::Orchestrator,
            Role::Activity(_) => crate::metrics::Role::Activity,
        }
    }
}

/// What an activity guest knows of the call it serves (it serves many in
/// turn): the random streams keyed for it, and its instance and execution,
/// which the links it makes are for.
#[derive(Default)]
pub struct ActivityCall {
    pub random: ActivityRandom,
    pub instance: String,
    pub execution: i64,
    /// The `traceparent` its outgoing HTTP requests carry (the attempt's
    /// span), when traced.
    pub http: TraceHttp,
}

pub struct GuestState {
    pub role: Role,
    pub settings: Arc<Settings>,
    /// What this app's deployment may read; `None` = every setting.
    allowed: AllowedSettings,
    /// Makes the links an activity hands to people.
    pub(super) links: Arc<LinkSigner>,
    pub output: MemoryOutputPipe,
    /// Where this call's output starts (an activity guest serves many calls).
    output_mark: usize,
    pub limits: GuestLimiter,
    /// The guest said it resets itself at each start
    /// (`orchestration.allow-reuse`): once its orchestration ended, it may
    /// serve another.
    pub reusable: bool,
    /// Until when the guest's `advance` calls may reveal queued history in
    /// this call (see `Orchestrator::arm`).
    pub replay_until: Option<Instant>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    deny_http: DenyHttp,
}

impl GuestState {
    pub fn new(
        role: Role,
        settings: Arc<Settings>,
        allowed: AllowedSettings,
        links: Arc<LinkSigner>,
        wasi: WasiCtx,
        output: MemoryOutputPipe,
        limits: StoreLimits,
    ) -> Self {
        let limits = GuestLimiter { limits, memory: 0 };
        GuestState {
            role,
            settings,
            allowed,
            links,
            output,
            output_mark: 0,
            limits,
            reusable: false,
            replay_until: None,
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            deny_http: DenyHttp,
        }
    }

    /// Makes a guest whose orchestration ended serve `role` (another
    /// orchestration).
    pub fn serve_as(&mut self, role: Role) {
        self.role = role;
        self.restart_sandbox();
    }

    /// Gives the guest its role's WASI afresh (an orchestrator's clock, and
    /// its randomness from the start of the stream its instance id seeds),
    /// and starts its output anew.
    pub fn restart_sandbox(&mut self) {
        self.wasi = self.role.wasi(&self.output);
        self.output_mark = self.output.contents().len();
    }

    /// Reveals history to the guest with `reveal`, then moves its clock to
    /// where that left the replay: the one place the orchestration clock
    /// follows history. `None` for an activity.
    pub fn reveal<T>(&mut self, reveal: impl FnOnce(&mut Replay) -> T) -> Option<T> {
        let Role::Orchestrator { replay, clock } = &mut self.role else {
            return None;
        };
        let revealed = reveal(replay);
        clock.set(replay.now());
        Some(revealed)
    }

    /// Reveals queued history up to the next event the guest acts on (see
    /// `Replay::reveal_next`).
    pub fn reveal_next(&mut self, starts: bool) -> Option<Cue> {
        self.reveal(|replay| replay.reveal_next(starts)).flatten()
    }

    pub fn replay(&mut self) -> wasmtime::Result<&mut Replay> {
        match &mut self.role {
            Role::Orchestrator { replay, .. } => Ok(replay),
            Role::Activity(_) => Err(wasmtime::Error::msg(
                "orchestration calls are not available to activities",
            )),
        }
    }

    /// Refuses settings the app's deployment did not allow.
    fn check_allowed(&self, name: &str) -> wasmtime::Result<()> {
        match &self.allowed {
            Some(allowed) if !allowed.contains(name) => Err(wasmtime::Error::msg(format!(
                "app setting {name} is not allowed for this app; deploy it with --allow-setting {name}"
            ))),
            _ => Ok(()),
        }
    }

    /// Starts a new activity call: what the guest printed before is not its
    /// output, its randomness is the call's own, and the links it makes are
    /// for the call's instance.
    pub fn begin_call(
        &mut self,
        key: &RandomKey,
        (instance_id, execution): (&str, i64),
        idempotency_key: &str,
        traceparent: Option<&crate::trace::Parent>,
    ) {
        self.output_mark = self.output.contents().len();
        if let Role::Activity(call) = &mut self.role {
            call.random.begin_call(key, idempotency_key);
            call.instance = instance_id.to_string();
            call.execution = execution;
            call.http.traceparent = traceparent.cloned();
        }
    }

    /// How much of the output capacity is used.
    pub fn output_used(&self) -> usize {
        self.output.contents().len()
    }

    /// What the guest printed in this call, with secrets removed.
    pub fn printed(&self) -> String {
        let contents = self.output.contents();
        let text = String::from_utf8_lossy(contents.get(self.output_mark..).unwrap_or_default())
            .trim()
            .to_string();
        self.settings.redact(&text)
    }
}

/// The store's limits, noting how large the guest's memories have grown
/// together (a guest kept for reuse, or kept hot, holds on to all of it).
pub struct GuestLimiter {
    limits: StoreLimits,
    pub memory: usize,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory += desired.saturating_sub(current);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let hooks: &mut dyn WasiHttpHooks = match &mut self.role {
            Role::Activity(call) if call.http.traceparent.is_some() => &mut call.http,
            Role::Activity(_) => Default::default(),
            Role::Orchestrator { .. } => &mut self.deny_http,
        };
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks,
        }
    }
}

/// What `WasiHttpHooks::send_request` is given: the request body's sending.
type BodySent = Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

/// What it answers: the response, and the body's sending still to finish.
type Sending = Box<
    dyn std::future::Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                BodySent,
            )>,
        > + Send,
>;

/// A traced activity's outgoing HTTP: each request carries the attempt's
/// `traceparent` (unless the guest set one), so the service it calls joins
/// the instance's trace; otherwise wasi:http's own sending.
#[derive(Default)]
pub struct TraceHttp {
    traceparent: Option<crate::trace::Parent>,
}

impl WasiHttpHooks for TraceHttp {
    fn send_request(
        &mut self,
        mut request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: BodySent,
    ) -> Sending {
        if let Some(parent) = &self.traceparent {
            let headers = request.headers_mut();
            if !headers.contains_key(TRACEPARENT) {
                if let Ok(value) = http::HeaderValue::from_str(&parent.traceparent()) {
                    headers.insert(TRACEPARENT, value);
                }
            }
        }
        wasmtime_wasi_http::default_hooks().send_request(request, options, fut)
    }
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Orchestrators make no network calls: that is what activities are for.
struct DenyHttp;

impl WasiHttpHooks for DenyHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: BodySent,
    ) -> Sending {
        Box::new(std::future::ready(Err(
            wasmtime_wasi_http::Error::HttpRequestDenied,
        )))
    }
}

impl types::Host for GuestState {}

impl From<types::RetryPolicy> for RetryPolicy {
    fn from(p: types::RetryPolicy) -> Self {
        RetryPolicy {
            max_attempts: p.max_attempts.max(1),
            first_retry_interval_ms: p.first_retry_interval_ms,
            backoff_coefficient: if p.backoff_coefficient.is_finite()
                && p.backoff_coefficient >= 1.0
            {
                p.backoff_coefficient
            } else {
                1.0
            },
            max_retry_interval_ms: p.max_retry_interval_ms,
            attempt_timeout_ms: p.attempt_timeout_ms,
        }
    }
}

impl orchestration::Host for GuestState {
    fn instance_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.replay()?.instance_id().to_string())
    }

    fn current_time(&mut self) -> wasmtime::Result<u64> {
        Ok(self.replay()?.now().max(0) as u64)
    }

    fn is_replaying(&mut self) -> wasmtime::Result<bool> {
        Ok(self.replay()?.is_replaying())
    }

    fn advance(&mut self) -> wasmtime::Result<bool> {
        self.replay()?;
        let in_time = self
            .replay_until
            .is_some_and(|until| Instant::now() < until);
        // Past its time the guest returns, and the host resumes it.
        Ok(in_time && self.reveal_next(false).is_some())
    }

    fn new_guid(&mut self) -> wasmtime::Result<String> {
        Ok(self.replay()?.new_guid())
    }

    fn call_activity(
        &mut self,
        name: String,
        input: String,
        retry: Option<types::RetryPolicy>,
    ) -> wasmtime::Result<u32> {
        Ok(self
            .replay()?
            .call_activity(&name, &input, retry.map(Into::into))?)
    }

    fn call_sub_orchestrator(
        &mut self,
        name: String,
        input: String,
        instance_id: Option<String>,
    ) -> wasmtime::Result<u32> {
        Ok(self
            .replay()?
            .call_sub_orchestrator(&name, &input, instance_id)?)
    }

    fn create_timer(&mut self, fire_at: u64) -> wasmtime::Result<u32> {
        let fire_at = i64::try_from(fire_at).unwrap_or(i64::MAX);
        Ok(self.replay()?.create_timer(fire_at)?)
    }

    fn cancel_timer(&mut self, timer: u32) -> wasmtime::Result<()> {
        self.replay()?.cancel_timer(timer);
        Ok(())
    }

    fn wait_for_event(&mut self, name: String) -> wasmtime::Result<u32> {
        Ok(self.replay()?.wait_for_event(&name)?)
    }

    fn task_sender(&mut self, task: u32) -> wasmtime::Result<Option<types::EventSender>> {
        Ok(self
            .replay()?
            .event_sender(task)
            .map(|sender| match sender {
                Sender::SystemKey => types::EventSender::SystemKey,
                Sender::Holder(holder) => types::EventSender::Holder(holder.clone()),
                Sender::UnnamedLink => types::EventSender::UnnamedLink,
            }))
    }

    fn when_any(&mut self, tasks: Vec<u32>) -> wasmtime::Result<Option<u32>> {
        Ok(self.replay()?.when_any(&tasks))
    }

    fn when_all(&mut self, tasks: Vec<u32>) -> wasmtime::Result<bool> {
        Ok(self.replay()?.when_all(&tasks))
    }

    fn task_result(&mut self, task: u32) -> wasmtime::Result<Option<Result<String, String>>> {
        Ok(self.replay()?.task_result(task))
    }

    fn set_custom_status(&mut self, status: Option<String>) -> wasmtime::Result<()> {
        if let Some(text) = &status {
            if text.len() > CUSTOM_STATUS_LIMIT {
                return Err(wasmtime::Error::msg(format!(
                    "custom status is {} bytes; the limit is {CUSTOM_STATUS_LIMIT}",
                    text.len()
                )));
            }
        }
        self.replay()?.set_custom_status(status);
        Ok(())
    }

    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        let message = self.settings.redact(&message);
        let replay = self.replay()?;
        if replay.is_replaying() {
            return Ok(());
        }
        let instance = replay.instance_id();
        match level {
            LogLevel::Trace => tracing::trace!(instance, "{message}"),
            LogLevel::Debug => tracing::debug!(instance, "{message}"),
            LogLevel::Info => tracing::info!(instance, "{message}"),
            LogLevel::Warn => tracing::warn!(instance, "{message}"),
            LogLevel::Error => tracing::error!(instance, "{message}"),
        }
        Ok(())
    }

    fn patched(&mut self, name: String) -> wasmtime::Result<bool> {
        Ok(self.replay()?.patched(&name)?)
    }

    fn started_version(&mut self) -> wasmtime::Result<String> {
        Ok(self.replay()?.started_version().to_string())
    }

    fn allow_reuse(&mut self) -> wasmtime::Result<()> {
        self.reusable = true;
        Ok(())
    }

    fn get_setting(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        self.check_allowed(&name)?;
        if self.settings.is_secret(&name) {
            return Err(wasmtime::Error::msg(format!(
                "setting {name} is secret: orchestrators may not read it (history would keep it); read it in an activity"
            )));
        }
        let current = self.settings.get(&name);
        Ok(self.replay()?.setting(&name, current)?)
    }
}

impl settings::Host for GuestState {
    fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        self.check_allowed(&name)?;
        match self.role {
            Role::Activity(_) => Ok(self.settings.get(&name)),
            Role::Orchestrator { .. } => Err(wasmtime::Error::msg(
                "orchestrators read settings through orchestration.get-setting",
            )),
        }
    }
}
