//! Request bodies: JSON that must parse, and limits that answer 413.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};

use super::ApiError;

/// The body as normalized JSON text; an empty body is `null`. A body sent
/// with a content type other than JSON is refused (415), as Durable
/// Functions refuses it; no content type at all is taken as JSON.
pub fn json_text(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<String, ApiError> {
    let bytes = bytes(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok("null".to_string());
    }
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let media = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let json = media == "application/json" || media == "text/json" || media.ends_with("+json");
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{what} must be sent as application/json, not {media:?}"),
            ));
        }
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("{what} is not valid JSON: {e}")))?;
    Ok(value.to_string())
}

pub fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "the request body is larger than the configured limit",
            )
        } else {
            ApiError::new(status, format!("cannot read the request body: {rejection}"))
        }
    })
}
