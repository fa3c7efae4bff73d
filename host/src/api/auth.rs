//! Who may call: the system key (`?code=KEY` or header `x-functions-key`),
//! a link's token (`?token=`, see `crate::links`) on the two routes a
//! link may use (its instance's status, and raising the events it names),
//! or the dashboard's session cookie, which its login form sets.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use percent_encoding::percent_decode_str;

use super::{ApiError, ApiState, PREFIX};
use crate::engine::history::Sender;
use crate::links::{Claims, LinkError, LinkSigner};
use crate::store::format_time;
use crate::store::now_ms;

/// A request that came with a link: what its verified token says. The
/// handlers find it among the request's extensions; it is absent when the
/// system key was presented (and on the keyless RPC listener).
#[derive(Debug, Clone)]
pub struct Link(pub Claims);

impl Link {
    /// Who an event raised by this request comes from.
    pub fn sender(link: Option<&Link>) -> Sender {
        match link.map(|l| &l.0.holder) {
            None => Sender::SystemKey,
            Some(Some(holder)) => Sender::Holder(holder.clone()),
            Some(None) => Sender::UnnamedLink,
        }
    }

    /// The execution a request's link was made for, if it came with one
    /// that says.
    pub fn execution(link: Option<&Link>) -> Option<i64> {
        link.and_then(|l| l.0.execution)
    }
}

/// The dashboard's session cookie. It holds a digest of the system key,
/// never the key: a page that leaks it leaks a session that ends when the
/// key changes. HttpOnly, so the page's scripts cannot read it;
/// SameSite=Strict, so no other site's page makes the browser send it.
pub const SESSION_COOKIE: &str = "durango_session";

/// The header the dashboard's scripts put on every request that changes
/// something. A request made with the cookie alone (a form another site
/// posts) lacks it, and another site's script cannot add it without the
/// host's consent, which it never gives (no CORS).
pub const DASHBOARD_HEADER: &str = "x-durango-dashboard";

/// A request that came with the dashboard's session: the URLs handed out
/// to it leave the key out, for the page's scripts have no use for it.
#[derive(Debug, Clone, Copy)]
pub struct Session;

/// The session cookie's value for `key`.
pub fn session_token(key: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(b"durango dashboard session v1");
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the request carries the dashboard session whose cookie value
/// is `expected` (the listener's `session_token`, made once).
pub fn has_session(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == SESSION_COOKIE && same(value.as_bytes(), expected.as_bytes()))
}

/// What a link may be used for at this method and path: the instance, and
/// the event it would raise (none for reading the status).
fn link_scope(method: &Method, path: &str) -> Option<(String, Option<String>)> {
    let rest = path.strip_prefix(PREFIX)?.strip_prefix("/instances/")?;
    let mut parts = rest.split('/');
    let id = parts.next().filter(|id| !id.is_empty())?;
    let event = match (method, parts.next(), parts.next(), parts.next()) {
        (&Method::GET, None, _, _) => None,
        (&Method::POST, Some("raiseEvent"), Some(event), None) if !event.is_empty() => {
            Some(decoded(event)?)
        }
        _ => return None,
    };
    Some((decoded(id)?, event))
}

/// A path segment as the router decodes it; `None` if it is not UTF-8.
fn decoded(segment: &str) -> Option<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The link a token makes of this request, or the answer refusing it:
/// `401` for a token that is not genuine or has expired, `403` for a
/// genuine one used beyond what it allows.
fn check_link(
    links: &LinkSigner,
    token: &str,
    method: &Method,
    path: &str,
) -> Result<Link, ApiError> {
    let claims = links.verify(token, now_ms()).map_err(|e| match e {
        LinkError::Invalid => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this link is not valid: its token is damaged or was not made by this host",
        ),
        LinkError::Expired(at) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("this link expired at {}", format_time(at)),
        ),
    })?;
    let forbidden = |message: String| ApiError::new(StatusCode::FORBIDDEN, message);
    let Some((instance, event)) = link_scope(method, path) else {
        return Err(forbidden(
            "a link allows only reading its instance's status and raising the events it names there"
                .into(),
        ));
    };
    if instance != claims.instance {
        return Err(forbidden(format!(
            "this link is for another instance than {instance}"
        )));
    }
    match event {
        Some(event) if !claims.allows_event(&event) => {
            Err(forbidden(format!("this link may not raise event {event}")))
        }
        _ => Ok(Link(claims)),
    }
}

fn query_value(request: &Request, name: &str) -> Option<String> {
    request.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    })
}

pub async fn require_key(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    // A request with a token is decided by the token alone.
    if let Some(token) = query_value(&request, "token") {
        let checked = check_link(
            &state.host.links,
            &token,
            request.method(),
            request.uri().path(),
        );
        return match checked {
            Ok(link) => {
                request.extensions_mut().insert(link);
                next.run(request).await
            }
            Err(refused) => refused.into_response(),
        };
    }
    let header = request
        .headers()
        .get("x-functions-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let presented = header.or_else(|| query_value(&request, "code"));
    if presented.is_none() && has_session(request.headers(), &state.session) {
        let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
        if changes && !request.headers().contains_key(DASHBOARD_HEADER) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "a change made with the dashboard's session must come from the dashboard",
            )
            .into_response();
        }
        request.extensions_mut().insert(Session);
        return next.run(request).await;
    }
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
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    fn p(rest: &str) -> String {
        format!("{PREFIX}{rest}")
    }

    #[test]
    fn links_are_scoped_to_the_status_and_events_of_one_instance() {
        let scope = |m: &Method, path: &str| link_scope(m, path);
        assert_eq!(
            scope(&Method::GET, &p("/instances/a%20b")),
            Some(("a b".into(), None))
        );
        assert_eq!(
            scope(&Method::POST, &p("/instances/a/raiseEvent/E%2F1")),
            Some(("a".into(), Some("E/1".into())))
        );
        assert_eq!(scope(&Method::POST, &p("/instances/a/terminate")), None);
        assert_eq!(scope(&Method::POST, &p("/instances/a/raiseEvent/")), None);
        assert_eq!(scope(&Method::DELETE, &p("/instances/a")), None);
        assert_eq!(scope(&Method::GET, &p("/instances")), None);
        assert_eq!(scope(&Method::GET, &p("/instances/%FF")), None);
        assert_eq!(scope(&Method::GET, "/admin/apps"), None);
    }

    #[test]
    fn a_link_is_refused_beyond_its_instance_and_events_and_after_it_expired() {
        let links = LinkSigner::new("s", "http://h");
        let url = links
            .event_link("a", 1, "Reply", "alice", now_ms() + 60_000)
            .unwrap();
        let token = url.split("token=").nth(1).unwrap();
        let status = |method: &Method, path: &str, token: &str| {
            check_link(&links, token, method, &p(path)).map_err(|e| e.status)
        };
        let link = status(&Method::POST, "/instances/a/raiseEvent/Reply", token).unwrap();
        assert_eq!(Link::sender(Some(&link)), Sender::Holder("alice".into()));
        assert!(status(&Method::GET, "/instances/a", token).is_ok());
        let forbidden = Err(StatusCode::FORBIDDEN);
        assert_eq!(
            status(&Method::POST, "/instances/b/raiseEvent/Reply", token).map(|_| ()),
            forbidden
        );
        assert_eq!(
            status(&Method::POST, "/instances/a/raiseEvent/Other", token).map(|_| ()),
            forbidden
        );
        assert_eq!(
            status(&Method::POST, "/instances/a/terminate", token).map(|_| ()),
            forbidden
        );
        let unauthorized = Err(StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(&Method::GET, "/instances/a", "garbled").map(|_| ()),
            unauthorized
        );
        let expired = links.status_link("a", 1, "alice", now_ms() - 1).unwrap();
        let expired = expired.split("token=").nth(1).unwrap();
        let refused = check_link(&links, expired, &Method::GET, &p("/instances/a")).unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert!(
            refused.message.starts_with("this link expired at "),
            "{}",
            refused.message
        );
    }

    #[test]
    fn the_system_key_and_the_general_link_name_nobody() {
        assert_eq!(Link::sender(None), Sender::SystemKey);
        let general = Link(Claims {
            instance: "a".into(),
            execution: None,
            events: None,
            holder: None,
            expires_at: 0,
        });
        assert_eq!(Link::sender(Some(&general)), Sender::UnnamedLink);
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_must_match_the_key() {
        let mut headers = HeaderMap::new();
        let token = session_token("k");
        assert!(!token.contains('k'), "a digest, not the key");
        headers.append(
            axum::http::header::COOKIE,
            format!("theme=dark; {SESSION_COOKIE}={token}")
                .parse()
                .unwrap(),
        );
        assert!(has_session(&headers, &token));
        assert!(!has_session(&headers, &session_token("another key")));
        let mut forged = HeaderMap::new();
        forged.append(
            axum::http::header::COOKIE,
            format!("x{SESSION_COOKIE}={token}").parse().unwrap(),
        );
        assert!(
            !has_session(&forged, &token),
            "only the cookie of that name"
        );
    }

    #[test]
    fn same_compares_whole_keys() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
