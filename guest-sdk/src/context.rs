use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bindings::durango::orchestration::orchestration as host;
use crate::bindings::durango::orchestration::types;
use crate::error::{Error, TaskError};
use crate::task::{EventTask, Task, TaskHandle, Timer, WhenAll, WhenAny};

pub use types::LogLevel;

/// How the host retries a failing activity (attempts count the first one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub first_retry_interval: Duration,
    pub backoff_coefficient: f64,
    pub max_retry_interval: Duration,
    /// Time limit for one attempt; `None` leaves the host's default.
    pub attempt_timeout: Option<Duration>,
}

impl RetryPolicy {
    pub fn new(max_attempts: u32, first_retry_interval: Duration) -> Self {
        RetryPolicy {
            max_attempts,
            first_retry_interval,
            backoff_coefficient: 2.0,
            max_retry_interval: Duration::from_secs(3600),
            attempt_timeout: None,
        }
    }
}

/// The orchestrator's window on the outside world. Every method is
/// deterministic: on replay it gives what it gave the first time.
#[derive(Clone, Copy, Debug, Default)]
pub struct OrchestrationContext {
    _private: (),
}

impl OrchestrationContext {
    pub(crate) fn new() -> Self {
        OrchestrationContext { _private: () }
    }

    pub fn instance_id(&self) -> String {
        host::instance_id()
    }

    /// The orchestration's current time: when the current episode started.
    /// Use it instead of the system clock to compute deadlines.
    pub fn current_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(host::current_time())
    }

    pub fn is_replaying(&self) -> bool {
        host::is_replaying()
    }

    /// Whether this instance runs the code after patch `name` (Temporal's
    /// `patched`, DBOS's `patch`): true for instances that reach this point
    /// on code that has it, false for those whose history older code wrote
    /// past it. The answer is recorded, so replay stays deterministic:
    ///
    /// ```ignore
    /// if ctx.patched("send-email-too") {
    ///     ctx.call_activity::<()>("SendEmail", &order).await?;
    /// }
    /// ```
    ///
    /// Once no instance older than the patch is left, the call (and the old
    /// branch) can go: history's marker is passed over.
    pub fn patched(&self, name: &str) -> bool {
        host::patched(name)
    }

    /// The digest of the app version this instance started on (also after
    /// it was moved to another version).
    pub fn started_version(&self) -> String {
        host::started_version()
    }

    /// A new UUID that is the same on every replay.
    pub fn new_guid(&self) -> String {
        host::new_guid()
    }

    /// Call an activity by name; await the task for its output.
    pub fn call_activity<O: DeserializeOwned>(&self, name: &str, input: impl Serialize) -> Task<O> {
        Task::new(host::call_activity(name, &to_json(&input), None))
    }

    /// Call an activity that the host retries per `policy` before it fails.
    pub fn call_activity_with_retry<O: DeserializeOwned>(
        &self,
        name: &str,
        input: impl Serialize,
        policy: RetryPolicy,
    ) -> Task<O> {
        let policy = types::RetryPolicy {
            max_attempts: policy.max_attempts.max(1),
            first_retry_interval_ms: millis(policy.first_retry_interval),
            backoff_coefficient: policy.backoff_coefficient,
            max_retry_interval_ms: millis(policy.max_retry_interval),
            attempt_timeout_ms: policy.attempt_timeout.map_or(0, millis),
        };
        Task::new(host::call_activity(name, &to_json(&input), Some(policy)))
    }

    /// Start another orchestration as a child; await the task for its
    /// output. The child has its own status; its id is derived from this
    /// instance's.
    pub fn call_sub_orchestrator<O: DeserializeOwned>(
        &self,
        name: &str,
        input: impl Serialize,
    ) -> Task<O> {
        Task::new(host::call_sub_orchestrator(name, &to_json(&input), None))
    }

    /// A child orchestration with the given instance id.
    pub fn call_sub_orchestrator_with_id<O: DeserializeOwned>(
        &self,
        name: &str,
        instance_id: &str,
        input: impl Serialize,
    ) -> Task<O> {
        Task::new(host::call_sub_orchestrator(
            name,
            &to_json(&input),
            Some(instance_id),
        ))
    }

    /// Call an HTTP endpoint as a durable step: the host makes the request
    /// (with retries per `policy`, if given) and records the response, so
    /// replay does not call again.
    pub fn call_http(&self, request: DurableHttpRequest) -> Task<DurableHttpResponse> {
        self.call_activity(BUILTIN_HTTP, request)
    }

    /// End this round and start the orchestration over with `input` and a
    /// fresh history; events not yet consumed carry over. Return its result
    /// from the orchestrator: `return ctx.continue_as_new(next)`.
    pub fn continue_as_new<O>(&self, input: impl Serialize) -> Result<O, Error> {
        crate::executor::continue_as_new(to_json(&input));
        Err(Error::msg("the orchestration continued as new"))
    }

    /// A durable timer that fires at `fire_at`; it survives restarts.
    pub fn create_timer(&self, fire_at: SystemTime) -> Timer {
        Timer::new(host::create_timer(epoch_millis(fire_at)))
    }

    /// A timer `delay` after the orchestration's current time.
    pub fn sleep(&self, delay: Duration) -> Timer {
        self.create_timer(self.current_time() + delay)
    }

    /// Wait for the next external event with exactly this name. Events
    /// raised before the wait are kept and consumed in order.
    pub fn wait_for_event<T: DeserializeOwned>(&self, name: &str) -> Task<T> {
        Task::new(host::wait_for_event(name))
    }

    /// As [`wait_for_event`](Self::wait_for_event), resolving to the data
    /// and its verified [`Sender`](crate::Sender): the holder of the link it
    /// came through, or the system key. Decide on the sender, never on who
    /// the data says it is from.
    pub fn wait_for_event_with_sender<T: DeserializeOwned>(&self, name: &str) -> EventTask<T> {
        EventTask::new(host::wait_for_event(name))
    }

    /// Resolves to the index of the task that completed first.
    pub fn when_any(&self, tasks: &[&dyn TaskHandle]) -> impl Future<Output = usize> {
        WhenAny {
            ids: tasks.iter().map(|t| t.task_id()).collect(),
        }
    }

    /// Resolves to every task's result, in the order given, once all completed.
    pub async fn when_all<T: DeserializeOwned>(
        &self,
        tasks: Vec<Task<T>>,
    ) -> Vec<Result<T, TaskError>> {
        WhenAll {
            ids: tasks.iter().map(|t| t.task_id()).collect(),
        }
        .await;
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await);
        }
        results
    }

    /// Shown as `customStatus` by the status API while the instance runs.
    pub fn set_custom_status(&self, status: impl Serialize) {
        let json = to_json(&status);
        host::set_custom_status((json != "null").then_some(json.as_str()));
    }

    /// A log line that the host writes once, not again on replay.
    pub fn log(&self, level: LogLevel, message: &str) {
        host::log(level, message);
    }

    /// A non-secret app setting, read in a replay-safe way.
    pub fn setting(&self, name: &str) -> Option<String> {
        host::get_setting(name)
    }

    /// A setting parsed into `T`, `None` when it is unset.
    pub fn setting_as<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, Error>
    where
        T::Err: std::fmt::Display,
    {
        self.setting(name)
            .map(|raw| {
                raw.trim()
                    .parse()
                    .map_err(|e| Error::msg(format!("setting {name} is invalid: {e}")))
            })
            .transpose()
    }
}

/// The activity name the host runs itself for [`OrchestrationContext::call_http`].
pub const BUILTIN_HTTP: &str = "durango.http";

/// A request for [`OrchestrationContext::call_http`].
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DurableHttpRequest {
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

impl DurableHttpRequest {
    pub fn get(url: &str) -> Self {
        DurableHttpRequest {
            method: "GET".into(),
            url: url.into(),
            ..Default::default()
        }
    }

    pub fn post(url: &str, content: impl Into<String>) -> Self {
        DurableHttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            content: Some(content.into()),
        }
    }
}

/// The recorded response of a durable HTTP call.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DurableHttpResponse {
    pub status_code: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub content: String,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the epoch, as the host's calls take times.
pub(crate) fn epoch_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, millis)
}

fn to_json(value: &impl Serialize) -> String {
    // Serializing plain data to a String cannot fail unless a map has
    // non-string keys; such input is a programming error in the orchestrator.
    serde_json::to_string(value).expect("orchestrator value serializes to JSON")
}
