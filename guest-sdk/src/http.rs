//! Outbound HTTP for activities, over `wasi:http`. Blocking, which is what an
//! activity wants: it runs to completion on its own instance.

use base64::Engine as _;
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

use crate::error::Error;

/// An HTTP request under construction.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A response, body read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

impl Request {
    pub fn new(method: &str, url: &str) -> Self {
        let method = match method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        Request {
            method,
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.header("Authorization", &format!("Basic {token}"))
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form(mut self, fields: &[(&str, &str)]) -> Self {
        self.body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish()
            .into_bytes();
        self.header("Content-Type", "application/x-www-form-urlencoded")
    }

    /// A JSON body.
    pub fn json(mut self, value: &impl serde::Serialize) -> Result<Self, Error> {
        self.body = serde_json::to_vec(value)?;
        Ok(self.header("Content-Type", "application/json"))
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Send the request and read the whole response.
    pub fn send(self) -> Result<Response, Error> {
        let target = Target::parse(&self.url)?;
        let mut fields: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        if let Some(length) = self.content_length() {
            fields.push(("Content-Length".into(), length.to_string().into_bytes()));
        }
        let headers = Fields::from_list(&fields)
            .map_err(|e| Error::msg(format!("invalid request header: {e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let invalid = |what: &str| Error::msg(format!("invalid {what} in URL {}", self.url));
        request
            .set_method(&self.method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&target.scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(&target.authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(&target.path))
            .map_err(|()| invalid("path"))?;

        let outgoing = request
            .body()
            .map_err(|()| Error::msg("request body taken twice"))?;
        let pending = outgoing_handler::handle(request, None)
            .map_err(|e| Error::msg(format!("HTTP request to {} failed: {e:?}", self.url)))?;
        write_body(&outgoing, &self.body)?;
        OutgoingBody::finish(outgoing, None)
            .map_err(|e| Error::msg(format!("HTTP request body failed: {e:?}")))?;

        pending.subscribe().block();
        let response = pending
            .get()
            .ok_or_else(|| Error::msg("HTTP response not ready"))?
            .map_err(|()| Error::msg("HTTP response taken twice"))?
            .map_err(|e| Error::msg(format!("HTTP request to {} failed: {e:?}", self.url)))?;
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| Error::msg("HTTP response body taken twice"))?;
        let body = read_body(&incoming)?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

impl Request {
    /// The body's size, sent as `Content-Length` (the body is whole before
    /// it is sent): many servers, proxies and gateways refuse or mishandle a
    /// chunked request body. A method that carries no body gets none, unless
    /// one was set; the caller's own `Content-Length` stands.
    fn content_length(&self) -> Option<usize> {
        let given = self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-length"));
        let bodiless = matches!(
            self.method,
            Method::Get | Method::Head | Method::Delete | Method::Options
        ) && self.body.is_empty();
        (!given && !bodiless).then_some(self.body.len())
    }
}

fn write_body(outgoing: &OutgoingBody, body: &[u8]) -> Result<(), Error> {
    let stream = outgoing
        .write()
        .map_err(|()| Error::msg("request body stream taken twice"))?;
    // blocking-write-and-flush accepts at most 4096 bytes per call.
    for chunk in body.chunks(4096) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|e| Error::msg(format!("writing the request body failed: {e:?}")))?;
    }
    Ok(())
}

fn read_body(incoming: &wasi::http::types::IncomingBody) -> Result<Vec<u8>, Error> {
    let stream = incoming
        .stream()
        .map_err(|()| Error::msg("response body stream taken twice"))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(e) => return Err(Error::msg(format!("reading the response failed: {e:?}"))),
        }
    }
}

struct Target {
    scheme: Scheme,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Error> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| Error::msg(format!("URL {url} has no scheme")))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(Error::msg(format!("URL scheme {other} is not supported"))),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() {
            return Err(Error::msg(format!("URL {url} has no host")));
        }
        Ok(Target {
            scheme,
            authority: authority.to_string(),
            path,
        })
    }
}
