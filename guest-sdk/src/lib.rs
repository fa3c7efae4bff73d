//! The Durango guest SDK: write durable orchestrations and their activities in
//! ordinary Rust and build them into one `wasm32-wasip2` component.
//!
//! ```ignore
//! use durango_sdk::{ActivityContext, Error, OrchestrationContext};
//!
//! async fn hello_sequence(ctx: OrchestrationContext, _: ()) -> Result<Vec<String>, Error> {
//!     let mut out = Vec::new();
//!     for city in ["Tokyo", "Seattle", "London"] {
//!         out.push(ctx.call_activity("E1_SayHello", city).await?);
//!     }
//!     Ok(out)
//! }
//!
//! fn say_hello(_: &ActivityContext, name: String) -> Result<String, Error> {
//!     Ok(format!("Hello {name}!"))
//! }
//!
//! durango_sdk::app! {
//!     orchestrator "E1_HelloSequence" => hello_sequence;
//!     activity "E1_SayHello" => say_hello;
//! }
//! ```
//!
//! Orchestrators must be deterministic: everything that touches the outside
//! world goes through [`OrchestrationContext`] (activities, timers, events,
//! time). The host replays an orchestrator from its history after a restart,
//! and checks each step against what history recorded.

mod activity;
mod context;
mod error;
mod executor;
pub mod http;
mod json;
mod registry;
mod task;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "function-app",
        pub_export_macro: true,
        export_macro_name: "__export_function_app",
        default_bindings_module: "durango_sdk::bindings",
    });
}

pub use activity::ActivityContext;
pub use context::{
    DurableHttpRequest, DurableHttpResponse, LogLevel, OrchestrationContext, RetryPolicy,
    BUILTIN_HTTP,
};
pub use error::{Error, TaskError};
pub use registry::Registry;
pub use task::{Event, EventTask, Sender, Task, TaskHandle, Timer};

/// A random `u64` from the host.
///
/// In an activity it comes from a stream the host keys per call, from the
/// call's idempotency key and a host secret the guest never sees: the
/// values are unguessable, and a re-run of the same call (after a crash, or
/// a retry) draws the same ones, so what the outside world got from the
/// first run (a verification code) stays valid. Draw each value from here
/// (or from WASI's random directly); a generator seeded once inside the
/// guest would not follow the call. In an orchestrator it comes from the
/// per-instance seeded generator, so replay sees the same value.
pub fn random_u64() -> u64 {
    wasi::random::random::get_random_u64()
}

#[doc(hidden)]
pub mod __private {
    pub use crate::executor::FunctionApp;
}

/// Declares the component's functions, one line each, and exports them.
///
/// ```ignore
/// durango_sdk::app! {
///     orchestrator "E4_SmsPhoneVerification" => sms_phone_verification;
///     activity "E4_SendSmsChallenge" => send_sms_challenge;
/// }
/// ```
///
/// An orchestrator is an `async fn(OrchestrationContext, I) -> Result<O, Error>`,
/// an activity a `fn(&ActivityContext, I) -> Result<O, Error>`, where `I` is
/// any `serde` deserializable input and `O` any serializable output.
#[macro_export]
macro_rules! app {
    ($($kind:ident $name:literal => $func:path;)*) => {
        struct __DurangoApp;
        impl $crate::__private::FunctionApp for __DurangoApp {
            fn register(registry: &mut $crate::Registry) {
                $( registry.$kind($name, $func); )*
            }
        }
        $crate::bindings::__export_function_app!(__DurangoApp);
    };
}
