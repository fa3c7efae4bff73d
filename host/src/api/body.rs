//! Request bodies: JSON that must parse, and limits that answer 413.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;

use super::ApiError;

/// The body as normalized JSON text; an empty body is `null`.
pub fn json_text(body: Result<Bytes, BytesRejection>, what: &str) -> Result<String, ApiError> {
    let bytes = bytes(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok("null".to_string());
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
