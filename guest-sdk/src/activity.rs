use std::time::SystemTime;

use crate::bindings::durango::orchestration::{links, settings, types};
use crate::context::epoch_millis;
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
    /// The instance's general status link, which names nobody (see
    /// [`send_event_url`](Self::send_event_url)); for a person, use
    /// [`status_url_for`](Self::status_url_for).
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

    /// The instance's general link for `event`: anyone who holds it can
    /// raise any event on this instance (and read its status) until the
    /// host's default link lifetime (7 days) ends. It names nobody, so the
    /// orchestrator sees [`Sender::UnnamedLink`](crate::Sender::UnnamedLink):
    /// hand it only where that is enough (a code the person must also know,
    /// say). To ask a person, use [`send_event_url_for`](Self::send_event_url_for).
    pub fn send_event_url(&self, event: &str) -> String {
        let encoded: String = form_urlencoded::byte_serialize(event.as_bytes()).collect();
        self.send_event_url.replace("{eventName}", &encoded)
    }

    /// A link for one person: `recipient` (an id the orchestration chose,
    /// such as an approver's name) can POST `event`'s data to this instance
    /// through it, and nothing else, until `expires` (default: the host's
    /// link lifetime). Events raised through it reach the orchestrator with
    /// [`Sender::Holder`](crate::Sender::Holder)`(recipient)`, whatever the
    /// data claims. The host signs it; the secret never enters the guest.
    pub fn send_event_url_for(
        &self,
        event: &str,
        recipient: &str,
        expires: Option<SystemTime>,
    ) -> Result<String, Error> {
        links::event_link(event, recipient, expires.map(epoch_millis)).map_err(Error::msg)
    }

    /// A link `recipient` can read this instance's status at (not its
    /// input or history) until `expires` (default: the host's link lifetime).
    pub fn status_url_for(
        &self,
        recipient: &str,
        expires: Option<SystemTime>,
    ) -> Result<String, Error> {
        links::status_link(recipient, expires.map(epoch_millis)).map_err(Error::msg)
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
