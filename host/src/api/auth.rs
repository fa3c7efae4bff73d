//! The system key, as `?code=KEY` or header `x-functions-key`.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use percent_encoding::percent_decode_str;
use sha2::Sha256;

use super::{ApiError, ApiState, PREFIX};

/// A token for one instance: raise its events and read its status, nothing
/// else. An HMAC of the instance id under the system key, so it needs no
/// storage and cannot be forged or moved to another instance.
pub fn instance_token(key: &str, instance_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(b"durango-instance:raise-event,status:");
    mac.update(instance_id.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Lower-case hex without a formatter call per byte: a token is made for
/// every activity call, and `format!` per byte showed in profiles.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push(DIGITS[usize::from(b >> 4)] as char);
        hex.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    hex
}

/// The instance a token may be used for at this method and path, if any.
fn instance_scope(method: &Method, path: &str) -> Option<String> {
    let rest = path.strip_prefix(PREFIX)?.strip_prefix("/instances/")?;
    let mut parts = rest.split('/');
    let id = parts.next().filter(|id| !id.is_empty())?;
    let allowed = match (method, parts.next(), parts.next(), parts.next()) {
        (&Method::GET, None, _, _) => true,
        (&Method::POST, Some("raiseEvent"), Some(event), None) => !event.is_empty(),
        _ => false,
    };
    allowed.then(|| percent_decode_str(id).decode_utf8_lossy().into_owned())
}

fn query_value(request: &Request, name: &str) -> Option<String> {
    request.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    })
}

pub async fn require_key(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if let Some(token) = query_value(&request, "token") {
        let scope = instance_scope(request.method(), request.uri().path());
        return match scope {
            Some(id) if same(token.as_bytes(), instance_token(&state.key, &id).as_bytes()) => {
                next.run(request).await
            }
            _ => ApiError::new(
                StatusCode::FORBIDDEN,
                "an instance token allows only raising events on, and reading the status of, its own instance",
            )
            .into_response(),
        };
    }
    let header = request
        .headers()
        .get("x-functions-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let presented = header.or_else(|| query_value(&request, "code"));
    match presented {
        Some(key) if same(key.as_bytes(), state.key.as_bytes()) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "the key is not valid").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a key is required: pass ?code=KEY or the x-functions-key header",
        )
        .into_response(),
    }
}

/// Compares in time that depends only on the lengths, not on where the
/// bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    #[test]
    fn tokens_are_scoped_to_status_and_events_of_one_instance() {
        let p = |rest: &str| format!("{}{rest}", super::PREFIX);
        let scope = |m: &Method, path: &str| super::instance_scope(m, path);
        assert_eq!(
            scope(&Method::GET, &p("/instances/a%20b")),
            Some("a b".into())
        );
        assert_eq!(
            scope(&Method::POST, &p("/instances/a/raiseEvent/E")),
            Some("a".into())
        );
        assert_eq!(scope(&Method::POST, &p("/instances/a/terminate")), None);
        assert_eq!(scope(&Method::DELETE, &p("/instances/a")), None);
        assert_eq!(scope(&Method::GET, &p("/instances")), None);
        assert_eq!(scope(&Method::GET, "/admin/apps"), None);
        assert_ne!(
            super::instance_token("k", "a"),
            super::instance_token("k", "b")
        );
    }

    #[test]
    fn tokens_are_lower_case_hex_of_the_whole_mac() {
        assert_eq!(super::hex(&[0x00, 0xab, 0x0f, 0xf0]), "00ab0ff0");
        let token = super::instance_token("k", "a");
        assert_eq!(token.len(), 64);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn same_compares_whole_keys() {
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd"));
        assert!(!super::same(b"abc", b"abcd"));
    }
}
