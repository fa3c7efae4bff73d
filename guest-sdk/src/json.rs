//! Decoding inputs, outputs and event data.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Decodes `json` into `T`. A JSON string whose text is itself JSON (what
/// the Python Durable Functions client sends: it encodes bodies twice) is
/// read as that inner JSON when it fits `T`, as the Python SDK reads it.
pub(crate) fn decode<T: DeserializeOwned>(json: &str) -> Result<T, serde_json::Error> {
    if let Ok(Value::String(inner)) = serde_json::from_str::<Value>(json) {
        if let Ok(value) = serde_json::from_str::<T>(&inner) {
            return Ok(value);
        }
    }
    serde_json::from_str(json)
}

#[cfg(test)]
mod tests {
    use super::decode;
    use serde_json::{json, Value};

    #[test]
    fn plain_json_decodes_as_it_is() {
        assert_eq!(
            decode::<String>("\"+14255550100\"").unwrap(),
            "+14255550100"
        );
        assert_eq!(decode::<u32>("1234").unwrap(), 1234);
    }

    #[test]
    fn double_encoded_json_decodes_to_the_inner_value() {
        let sent = serde_json::to_string(&"{\"approved\": true}").unwrap();
        assert_eq!(decode::<Value>(&sent).unwrap(), json!({"approved": true}));
        assert_eq!(decode::<String>("\"\\\"+1425\\\"\"").unwrap(), "+1425");
    }

    #[test]
    fn a_string_that_only_looks_like_json_stays_a_string() {
        assert_eq!(decode::<String>("\"123\"").unwrap(), "123");
    }
}
