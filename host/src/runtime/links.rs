//! The `links` interface: an activity asks the host for a link that names
//! a person. The host signs it, so the guest never holds the secret, and
//! the link is for the instance of the call being served, never another.

use super::bindings::durango::orchestration::links;
use super::guest::{GuestState, Role};
use crate::links::expiry;
use crate::store::now_ms;

impl GuestState {
    /// Where an activity's link goes and until when: the instance and
    /// execution of the call being served, and the expiry (`expires_at_ms`,
    /// else the default).
    fn link_target(&self, expires_at_ms: Option<u64>) -> wasmtime::Result<(&str, i64, i64)> {
        match &self.role {
            Role::Activity(call) => Ok((
                &call.instance,
                call.execution,
                expiry(expires_at_ms, now_ms()),
            )),
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
        let (instance, execution, expires_at) = self.link_target(expires_at_ms)?;
        Ok(self
            .links
            .event_link(instance, execution, &event, &holder, expires_at))
    }

    fn status_link(
        &mut self,
        holder: String,
        expires_at_ms: Option<u64>,
    ) -> wasmtime::Result<Result<String, String>> {
        let (instance, execution, expires_at) = self.link_target(expires_at_ms)?;
        Ok(self
            .links
            .status_link(instance, execution, &holder, expires_at))
    }
}
