//! The system key, as `?code=KEY` or header `x-functions-key`.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};

pub async fn require_key(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get("x-functions-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let query = request.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
    });
    let presented = header.or(query);
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
    #[test]
    fn same_compares_whole_keys() {
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd"));
        assert!(!super::same(b"abc", b"abcd"));
    }
}
