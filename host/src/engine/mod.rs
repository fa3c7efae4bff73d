//! The orchestration engine: the history model, replay with its determinism
//! check, and the episode that turns new messages into one commit.

pub mod episode;
pub mod history;
pub mod replay;
pub mod rewind;
pub mod timeline;
