//! Durango: durable orchestrations for WebAssembly components.
//!
//! `host` wires the parts together: `store` (SQLite, one writer with group
//! commit), `engine` (history, replay, episodes), `runtime` (wasmtime and the
//! deterministic sandbox), `scheduler` (dispatch, timers, activity workers),
//! `links` (signed links for people), `metrics` (what Prometheus scrapes) and
//! `api` (the HTTP routes). `client` is the CLI's side of the API;
//! `authoring` is `durango new` and `durango build`.

pub mod api;
pub mod authoring;
pub mod bench;
pub mod catalog;
pub mod check;
pub mod client;
pub mod engine;
pub mod fake_sms;
pub mod host;
pub mod links;
pub mod metrics;
pub mod notify;
pub mod paths;
pub mod runtime;
pub mod scheduler;
pub mod serve;
pub mod settings;
pub mod signals;
pub mod store;
pub mod trace;
pub mod waiters;
