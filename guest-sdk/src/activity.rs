use crate::bindings::durango::orchestration::{settings, types};
use crate::error::Error;

/// What an activity knows about the call it serves, and its settings.
#[derive(Debug, Clone)]
pub struct ActivityContext {
    pub instance_id: String,
    /// Stable across retries and re-runs after a crash (instance id + step):
    /// pass it to providers that deduplicate requests.
    pub idempotency_key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
}

impl ActivityContext {
    pub(crate) fn new(context: types::ActivityContext) -> Self {
        ActivityContext {
            instance_id: context.instance_id,
            idempotency_key: context.idempotency_key,
            attempt: context.attempt,
        }
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
