//! The Durable Functions route prefix and the encoding of path segments:
//! shared by the API that serves the routes, the links made for people and
//! the CLI's client that calls them.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The management routes' prefix, as Durable Functions has it.
pub const PREFIX: &str = "/runtime/webhooks/durabletask";

/// Everything but the unreserved characters of RFC 3986.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` as one path segment or query value.
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}
