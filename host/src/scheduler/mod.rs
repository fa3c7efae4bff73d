//! Who runs what, when: per-instance episodes (kept hot between them),
//! durable timers from a heap, and the activity worker pool. Everything is
//! woken by notification; nothing polls.

pub mod activities;
pub mod dispatch;
pub mod durable_http;
pub mod timers;
