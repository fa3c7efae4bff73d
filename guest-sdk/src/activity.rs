use crate::bindings::durango::orchestration::{settings, types};
use crate::error::Error;

/// What an activity knows about the call it serves, and its settings.
#[derive(Debug, Clone)]
pub struct ActivityContext {
    pub instance_id: String,
    /// Stable across retries and re-runs after a crash, unique to the call
    /// for ever (instance id, execution, step):
    /// pass it to providers that deduplicate requests.
    pub idempotency_key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    send_event_url: String,
    /// Where a person can read this instance's status (token included).
    pub status_url: String,
}

impl ActivityContext {
    pub(crate) fn new(context: types::ActivityContext) -> Self {
        ActivityContext {
            instance_id: context.instance_id,
            idempotency_key: context.idempotency_key,
            attempt: context.attempt,
            send_event_url: context.send_event_url,
            status_url: context.status_url,
        }
    }

    /// A link a person can POST `event`'s data to, for this instance only
    /// (it carries a token that allows raising events and reading status).
    pub fn send_event_url(&self, event: &str) -> String {
        let encoded: String = form_urlencoded::byte_serialize(event.as_bytes()).collect();
        self.send_event_url.replace("{eventName}", &encoded)
    }

    /// An app setting (from the host's environment or settings file).
    pub fn setting(&self, name: &str) -> Option<String> {
        settings::get(name)
    }

    /// An app setting that must be present.
    pub fn required_setting(&self, name: &str) -> Result<String, Error> {
        self.setting(name)
            .ok_or_else(|| Error::msg(format!("app setting {name} is not set")))
    }
}
