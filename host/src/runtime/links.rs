//! The `links` interface: an activity asks the host for a link that names
//! a person. The host signs it, so the guest never holds the secret, and
//! the link is for the instance of the call being served, never another.

use super::bindings::durango::orchestration::links;
use super::guest::{GuestState, Role};
use crate::links::expiry;
use crate::store::now_ms;

impl GuestState {
    /// The instance (and its execution) the links are for: the activity
    /// call's.
    fn link_instance(&self) -> wasmtime::Result<(&str, i64)> {
        match self.role {
            Role::Activity(_) => Ok((&self.call_instance, self.call_execution)),
            Role::Orchestrator { .. } => Err(wasmtime::Error::msg(
                "orchestrators cannot make links (they are not replay-safe): make them in an activity",
            )),
        }
    }
}

impl links::Host for GuestState {
    fn event_link(
        &mut self,
        event: String,
        holder: String,
        expires_at_ms: Option<u64>,
    ) -> wasmtime::Result<Result<String, String>> {
        let expires_at = expiry(expires_at_ms, now_ms());
        let (instance, execution) = self.link_instance()?;
        Ok(self
            .links
            .event_link(instance, execution, &event, &holder, expires_at))
    }

    fn status_link(
        &mut self,
        holder: String,
        expires_at_ms: Option<u64>,
    ) -> wasmtime::Result<Result<String, String>> {
        let expires_at = expiry(expires_at_ms, now_ms());
        let (instance, execution) = self.link_instance()?;
        Ok(self
            .links
            .status_link(instance, execution, &holder, expires_at))
    }
}
