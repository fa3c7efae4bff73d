//! Links for people. A link's token is a signed, self-contained claim: which
//! instance, which events it may raise, whom it speaks for and until when.
//! It needs no storage, cannot be forged or widened, and the host puts its
//! holder on every event raised through it, so a link speaks for one person
//! whatever the request body claims.
//!
//! Token: `base64url(claims JSON) "." base64url(HMAC-SHA256)`, the MAC under
//! a host secret kept in the database (shared by every host on it, never
//! shown to guests).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How long a link lives when its maker names no expiry: long enough for a
/// person to get to it, short of forever.
pub const DEFAULT_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;

/// Longest holder (recipient id) a link may name.
const MAX_HOLDER_LEN: usize = 256;

/// Keeps the MAC of a link apart from anything else signed with the secret.
const DOMAIN: &[u8] = b"durango-link-v1:";

/// What a link allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "i")]
    pub instance: String,
    /// The execution under that id the link was made for: an instance
    /// started again under the same id is another one, which the link does
    /// not reach. (`None` in tokens made before it was recorded.)
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<i64>,
    /// The events it may raise; `None` is any event (the instance's
    /// general link). Empty: it only reads the status.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// Whom it speaks for; `None` for the general link, which names nobody.
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// Milliseconds since the epoch.
    #[serde(rename = "x")]
    pub expires_at: i64,
}

impl Claims {
    /// Whether the link may raise `event` on its instance. (Every link may
    /// read its instance's status.)
    pub fn allows_event(&self, event: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.iter().any(|e| e == event))
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// Garbled, forged, or signed under another secret.
    Invalid,
    /// Genuine, but past its expiry (milliseconds since the epoch).
    Expired(i64),
}

/// Makes and checks links under the host's link secret.
pub struct LinkSigner {
    mac: Hmac<Sha256>,
    /// `{public url}{management prefix}/instances/`.
    base: String,
}

impl LinkSigner {
    pub fn new(secret: &str, public_url: &str) -> LinkSigner {
        LinkSigner {
            mac: Hmac::new_from_slice(secret.as_bytes()).expect("HMAC takes any key"),
            base: format!("{public_url}{}/instances/", crate::paths::PREFIX),
        }
    }

    fn signature(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        mac.update(payload.as_bytes());
        mac
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let json = serde_json::to_vec(claims).expect("claims serialize");
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mac = self.signature(&payload).finalize().into_bytes();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// The claims of a genuine, unexpired token. The MAC is checked (in
    /// constant time) before anything of the payload is read.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Claims, LinkError> {
        let (payload, mac) = token.split_once('.').ok_or(LinkError::Invalid)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| LinkError::Invalid)?;
        self.signature(payload)
            .verify_slice(&mac)
            .map_err(|_| LinkError::Invalid)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(LinkError::Invalid)?;
        if now_ms >= claims.expires_at {
            return Err(LinkError::Expired(claims.expires_at));
        }
        Ok(claims)
    }

    fn instance_url(&self, instance: &str) -> String {
        format!("{}{}", self.base, crate::paths::encode(instance))
    }

    /// A link `holder` can POST `event`'s data to, on `instance` only.
    pub fn event_link(
        &self,
        instance: &str,
        execution: i64,
        event: &str,
        holder: &str,
        expires_at: i64,
    ) -> Result<String, String> {
        if event.is_empty() {
            return Err("a link needs an event name".into());
        }
        let claims = Claims {
            instance: instance.to_string(),
            execution: Some(execution),
            events: Some(vec![event.to_string()]),
            holder: Some(checked_holder(holder)?),
            expires_at,
        };
        Ok(format!(
            "{}/raiseEvent/{}?token={}",
            self.instance_url(instance),
            crate::paths::encode(event),
            self.sign(&claims)
        ))
    }

    /// A link `holder` can read `instance`'s status at (and nothing else).
    pub fn status_link(
        &self,
        instance: &str,
        execution: i64,
        holder: &str,
        expires_at: i64,
    ) -> Result<String, String> {
        let claims = Claims {
            instance: instance.to_string(),
            execution: Some(execution),
            events: Some(Vec::new()),
            holder: Some(checked_holder(holder)?),
            expires_at,
        };
        Ok(format!(
            "{}?token={}",
            self.instance_url(instance),
            self.sign(&claims)
        ))
    }

    /// The instance's general links, which name nobody: (send-event URL
    /// with `{eventName}`, status URL), valid for the default lifetime.
    pub fn general_links(&self, instance: &str, execution: i64, now_ms: i64) -> (String, String) {
        let token = self.sign(&Claims {
            instance: instance.to_string(),
            execution: Some(execution),
            events: None,
            holder: None,
            expires_at: now_ms.saturating_add(DEFAULT_LIFETIME_MS),
        });
        let url = self.instance_url(instance);
        (
            format!("{url}/raiseEvent/{{eventName}}?token={token}"),
            format!("{url}?token={token}"),
        )
    }
}

fn checked_holder(holder: &str) -> Result<String, String> {
    if holder.is_empty() || holder.len() > MAX_HOLDER_LEN {
        return Err(format!(
            "a link's holder must have 1 to {MAX_HOLDER_LEN} bytes"
        ));
    }
    Ok(holder.to_string())
}

/// A link maker's expiry (milliseconds since the epoch), or the default.
pub fn expiry(expires_at_ms: Option<u64>, now_ms: i64) -> i64 {
    match expires_at_ms {
        Some(at) => i64::try_from(at).unwrap_or(i64::MAX),
        None => now_ms.saturating_add(DEFAULT_LIFETIME_MS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> LinkSigner {
        LinkSigner::new("secret", "http://h")
    }

    fn token(url: &str) -> &str {
        url.split("token=").nth(1).unwrap()
    }

    #[test]
    fn a_link_names_its_instance_events_holder_and_expiry() {
        let url = links()
            .event_link("a b", 1, "Reply", "alice", 1_000)
            .unwrap();
        assert!(url.starts_with(
            "http://h/runtime/webhooks/durabletask/instances/a%20b/raiseEvent/Reply?token="
        ));
        let claims = links().verify(token(&url), 999).unwrap();
        assert_eq!(claims.instance, "a b");
        assert_eq!(claims.holder.as_deref(), Some("alice"));
        assert_eq!(claims.expires_at, 1_000);
        assert!(claims.allows_event("Reply"));
        assert!(!claims.allows_event("Other"));
        assert!(!claims.allows_event("reply"), "names match exactly");
    }

    #[test]
    fn a_status_link_raises_nothing_and_the_general_link_raises_anything() {
        let status = links().status_link("i", 1, "bob", 1_000).unwrap();
        let claims = links().verify(token(&status), 0).unwrap();
        assert_eq!(claims.holder.as_deref(), Some("bob"));
        assert!(!claims.allows_event("Reply"));
        let (send, read) = links().general_links("i", 1, 0);
        assert_eq!(token(&send), token(&read));
        let claims = links()
            .verify(token(&send), DEFAULT_LIFETIME_MS - 1)
            .unwrap();
        assert_eq!(claims.holder, None);
        assert_eq!(claims.instance, "i");
        assert!(claims.allows_event("Anything"));
    }

    #[test]
    fn an_expired_link_says_when_it_expired() {
        let url = links().status_link("i", 1, "bob", 1_000).unwrap();
        assert_eq!(
            links().verify(token(&url), 1_000),
            Err(LinkError::Expired(1_000))
        );
    }

    #[test]
    fn a_changed_forged_or_garbled_token_is_invalid() {
        let url = links().event_link("i", 1, "Reply", "alice", 1_000).unwrap();
        let genuine = token(&url);
        let (payload, mac) = genuine.split_once('.').unwrap();
        // The same claims for bob, with alice's MAC.
        let bob = links().event_link("i", 1, "Reply", "bob", 1_000).unwrap();
        let bob_payload = token(&bob).split_once('.').unwrap().0;
        let forged = [
            format!("{bob_payload}.{mac}"),
            format!("{payload}x.{mac}"),
            format!("{payload}.{}", &mac[1..]),
            payload.to_string(),
            String::new(),
            ".".into(),
            "%%%.***".into(),
            "é.é".into(),
        ];
        for token in forged {
            assert_eq!(
                links().verify(&token, 0),
                Err(LinkError::Invalid),
                "{token}"
            );
        }
        let other_secret = LinkSigner::new("other", "http://h");
        assert_eq!(other_secret.verify(genuine, 0), Err(LinkError::Invalid));
        assert!(links().verify(genuine, 0).is_ok());
    }

    #[test]
    fn a_link_needs_a_holder_and_an_event() {
        assert!(links().event_link("i", 1, "E", "", 1).is_err());
        assert!(links().event_link("i", 1, "", "alice", 1).is_err());
        assert!(links().status_link("i", 1, &"x".repeat(257), 1).is_err());
        assert_eq!(expiry(Some(5), 100), 5);
        assert_eq!(expiry(None, 100), 100 + DEFAULT_LIFETIME_MS);
        assert_eq!(expiry(Some(u64::MAX), 0), i64::MAX);
    }
}
