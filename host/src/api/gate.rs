//! The request-head gate: every HTTP/1 request head on a connection passes
//! through here before hyper parses it.
//!
//! hyper answers a head it cannot take (a request target over 64 KiB, too
//! many or too large header fields, a malformed line) on its own, with an
//! empty body, before any of our code runs. The gate refuses such heads
//! first — and anything over our own, smaller limits — so that the answer
//! is our JSON error like every other one. It hands hyper a stand-in request
//! instead, which the listener's service answers with the refusal (see
//! `listen`), on a connection that then closes. To find where each head
//! starts on a kept-alive connection, the gate follows the body framing on
//! the wire (`Content-Length` or chunked), by the same rules as hyper.
//!
//! The gate also times the client while it owes us a request head (see
//! `Timeouts`), and after our last answer reads for a while what the client
//! still sends (see `LINGER`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use axum::http::{StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::ApiError;

/// Longest request target (path and query) we take.
pub const MAX_TARGET: usize = 8 * 1024;
/// Largest request head (request line and header fields) we take.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one request; hyper is told the same.
pub const MAX_HEADERS: usize = 100;

/// Marks the stand-in request (see `STAND_IN`).
pub const STAND_IN_MARKER: &str = "x-durango-refused";

/// What hyper reads in place of a refused head: a request without a body
/// that closes the connection once answered.
const STAND_IN: &[u8] =
    b"GET / HTTP/1.1\r\nhost: durango\r\nconnection: close\r\nx-durango-refused: 1\r\n\r\n";

/// How long a connection closed in the middle of a request (a refused
/// head, a body over the limit) keeps reading and dropping what the client
/// still sends after our answer, at most `LINGER_BYTES` of it. Closing a
/// socket with unread input resets the connection, and a client still busy
/// sending its oversized head or body would lose the answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 << 20;

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 16 * 1024;

/// How long a client may keep its connection while it owes us a request
/// head.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From the connection's start, or on a kept-alive connection from the
    /// first byte of the next request, until its head is complete.
    pub head: Duration,
    /// From an answer until the first byte of the next request.
    pub idle: Duration,
}

/// What a connection's gate and its service share.
#[derive(Debug, Default)]
pub struct Exchange {
    /// A refused head's error, for the service to answer.
    pub refusal: Option<ApiError>,
    /// Requests the gate let through that the service has not answered:
    /// meanwhile the client owes us nothing and is not timed.
    unanswered: u64,
    /// The gate's task, woken when the last of them is answered: the wait
    /// for the next head starts then.
    waker: Option<Waker>,
}

impl Exchange {
    /// The service has answered a request the gate let through.
    pub fn answered(&mut self) {
        self.unanswered = self.unanswered.saturating_sub(1);
        if self.unanswered == 0 {
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
    }
}

pub type Shared = Arc<Mutex<Exchange>>;

/// What follows a request head on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Body {
    None,
    Sized(u64),
    Chunked,
}

impl Body {
    fn state(self) -> State {
        match self {
            Body::None => State::Head,
            Body::Sized(length) => State::Pass {
                left: length,
                then: Body::None,
            },
            Body::Chunked => State::Chunked(Chunks::default()),
        }
    }
}

enum State {
    /// Collecting the next request head.
    Head,
    /// Passing `left` bytes of a head or a sized body, then `then`.
    Pass { left: u64, then: Body },
    /// Passing a chunked body.
    Chunked(Chunks),
    /// Handing hyper the stand-in (`given` bytes so far), then nothing.
    Refused { given: usize },
}

/// What the gate's timer is set for.
#[derive(Clone, Copy, PartialEq)]
enum Timing {
    /// Nothing: a request is being read or answered.
    Nothing,
    /// The next request on a kept-alive connection (`Timeouts::idle`).
    Idle,
    /// A request head (`Timeouts::head`).
    Head,
    /// The end of the linger after our last answer (`LINGER`).
    Linger,
}

/// A connection as hyper sees it: request heads checked, bodies passed on.
pub struct Gate<IO> {
    io: IO,
    /// `buf[pos..]` was read from `io` and not handed to hyper yet.
    buf: Vec<u8>,
    pos: usize,
    /// How much of `buf[pos..]` was searched for the end of a head.
    searched: usize,
    state: State,
    shared: Shared,
    timeouts: Timeouts,
    timing: Timing,
    timer: Pin<Box<Sleep>>,
    /// Bytes dropped while lingering.
    discarded: usize,
}

impl<IO> Gate<IO> {
    /// A new connection: its first request head is due within
    /// `timeouts.head`.
    pub fn new(io: IO, shared: Shared, timeouts: Timeouts) -> Self {
        Gate {
            io,
            buf: Vec::new(),
            pos: 0,
            searched: 0,
            state: State::Head,
            shared,
            timeouts,
            timing: Timing::Head,
            timer: Box::pin(tokio::time::sleep(timeouts.head)),
            discarded: 0,
        }
    }

    /// A connection that gets `error` before anything is read from it.
    pub fn refusing(io: IO, shared: Shared, timeouts: Timeouts, error: ApiError) -> Self {
        let mut gate = Gate::new(io, shared, timeouts);
        gate.refuse(error);
        gate
    }

    /// How many bytes of `buf[pos..]` (at most `limit`) hyper may have now,
    /// moving the framing past them; 0 when more input is needed first (or
    /// the head was refused).
    fn release(&mut self, limit: usize) -> usize {
        loop {
            let pending = &self.buf[self.pos..];
            match &mut self.state {
                State::Refused { .. } => return 0,
                State::Head => {
                    if pending.len() <= MAX_HEAD && !head_ended(pending, &mut self.searched) {
                        return 0;
                    }
                    match inspect(pending) {
                        Ok(None) => return 0,
                        Ok(Some((length, body))) => {
                            self.searched = 0;
                            self.timing = Timing::Nothing;
                            self.shared.lock().expect("exchange").unanswered += 1;
                            self.state = State::Pass {
                                left: length as u64,
                                then: body,
                            };
                        }
                        Err(error) => {
                            self.refuse(error);
                            return 0;
                        }
                    }
                }
                State::Pass { left: 0, then } => self.state = then.state(),
                State::Pass { left, .. } => {
                    let n = pending.len().min(limit);
                    let n = usize::try_from(*left).map_or(n, |left| n.min(left));
                    *left -= n as u64;
                    return n;
                }
                State::Chunked(chunks) => {
                    let n = pending.len().min(limit);
                    return match chunks.scan(&pending[..n]) {
                        Some(end) => {
                            self.state = State::Head;
                            end
                        }
                        None => n,
                    };
                }
            }
        }
    }

    fn refuse(&mut self, error: ApiError) {
        tracing::debug!(?error, "refused a request head");
        self.shared.lock().expect("exchange").refusal = Some(error);
        self.state = State::Refused { given: 0 };
        self.buf.clear();
        self.pos = 0;
    }

    /// Whether the client may still be sending a request that hyper has
    /// stopped reading.
    fn mid_request(&self) -> bool {
        self.pos < self.buf.len()
            || !matches!(
                self.state,
                State::Head
                    | State::Pass {
                        left: 0,
                        then: Body::None
                    }
            )
    }

    fn arm(&mut self, timing: Timing, after: Duration) {
        self.timing = timing;
        self.timer.as_mut().reset(Instant::now() + after);
    }

    /// Called when the client has nothing more for now. While hyper waits
    /// for a request head and no request is being answered, the client is
    /// timed: `Ready` when its time is up.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !matches!(self.state, State::Head) {
            return Poll::Pending;
        }
        {
            let mut shared = self.shared.lock().expect("exchange");
            if shared.unanswered > 0 {
                shared.waker = Some(cx.waker().clone());
                self.timing = Timing::Nothing;
                return Poll::Pending;
            }
        }
        let started = self.pos < self.buf.len();
        match self.timing {
            Timing::Nothing if !started => self.arm(Timing::Idle, self.timeouts.idle),
            Timing::Nothing | Timing::Idle if started => self.arm(Timing::Head, self.timeouts.head),
            _ => {}
        }
        self.timer.as_mut().poll(cx)
    }
}

impl<IO: AsyncRead + Unpin> Gate<IO> {
    /// Reads more from the socket into `buf`; the count, 0 at its end.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let start = self.buf.len();
        self.buf.resize(start + READ_SIZE, 0);
        let mut read = ReadBuf::new(&mut self.buf[start..]);
        let polled = Pin::new(&mut self.io).poll_read(cx, &mut read);
        let n = read.filled().len();
        self.buf.truncate(start + n);
        ready!(polled)?;
        Poll::Ready(Ok(n))
    }

    /// Reads and drops input until the client stops sending or
    /// `LINGER_BYTES` were dropped (`Ready`), or it has nothing more for now
    /// (`Pending`).
    fn discard(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.discarded < LINGER_BYTES {
            self.buf.clear();
            self.pos = 0;
            match ready!(self.fill(cx))? {
                0 => break,
                n => self.discarded += n,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Gate<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let gate = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let State::Refused { given } = &mut gate.state {
                if *given < STAND_IN.len() {
                    let n = out.remaining().min(STAND_IN.len() - *given);
                    out.put_slice(&STAND_IN[*given..*given + n]);
                    *given += n;
                    return Poll::Ready(Ok(()));
                }
                return gate.discard(cx);
            }
            let n = gate.release(out.remaining());
            if n > 0 {
                out.put_slice(&gate.buf[gate.pos..gate.pos + n]);
                gate.pos += n;
                return Poll::Ready(Ok(()));
            }
            if matches!(gate.state, State::Refused { .. }) {
                continue;
            }
            let filled = gate.fill(cx);
            if filled.is_pending() {
                ready!(gate.poll_deadline(cx));
                if gate.pos == gate.buf.len() {
                    // Nothing of a request came: close quietly, as hyper
                    // closes an idle connection.
                    return Poll::Ready(Ok(()));
                }
                let seconds = gate.timeouts.head.as_secs_f64();
                gate.refuse(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the request head did not arrive within {seconds} s"),
                ));
                continue;
            }
            // A partial head at the end of input is dropped: hyper would
            // drop it too, without an answer.
            if ready!(filled)? == 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Gate<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let gate = self.get_mut();
        if gate.timing != Timing::Linger {
            let linger = gate.mid_request();
            // Our answer is out; the client sees its end now.
            ready!(Pin::new(&mut gate.io).poll_shutdown(cx))?;
            if !linger {
                return Poll::Ready(Ok(()));
            }
            gate.arm(Timing::Linger, LINGER);
        }
        if gate.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        // A read error ends the linger as the end of input does.
        ready!(gate.discard(cx)).ok();
        Poll::Ready(Ok(()))
    }
}

/// Whether `pending` may hold a whole head: it has an empty line. Searches
/// only what arrived since the last call, so a head that trickles in byte by
/// byte costs no more than one that arrives at once.
fn head_ended(pending: &[u8], searched: &mut usize) -> bool {
    // Back up over two bytes: an end may straddle the previous search.
    let tail = &pending[searched.saturating_sub(2)..];
    *searched = pending.len();
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// Checks a request head at the start of `pending`: its length and what
/// follows it, `None` while it is incomplete, or why it is refused.
fn inspect(pending: &[u8]) -> Result<Option<(usize, Body)>, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(pending) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if pending.len() <= MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(head_too_large(pending)),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("a request may have at most {MAX_HEADERS} header fields"),
            ))
        }
        Err(error) => return Err(ApiError::bad_request(format!("malformed request: {error}"))),
    };
    if length > MAX_HEAD {
        return Err(head_too_large(pending));
    }
    let target = request.path.expect("a complete head has a target");
    if target.len() > MAX_TARGET {
        return Err(target_too_long());
    }
    if let Err(error) = Uri::try_from(target) {
        return Err(ApiError::bad_request(format!(
            "malformed request target: {error}"
        )));
    }
    let http_11 = request.version == Some(1);
    framing(http_11, request.headers).map(|body| Some((length, body)))
}

/// A head longer than we take: 414 when its request line alone is too long,
/// else 431.
fn head_too_large(pending: &[u8]) -> ApiError {
    // Empty lines before the request line are allowed (and skipped).
    let start = pending
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(pending.len());
    let line = pending[start..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or(b"");
    if line.len() > MAX_TARGET {
        target_too_long()
    } else {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request head is over {MAX_HEAD} bytes"),
        )
    }
}

fn target_too_long() -> ApiError {
    ApiError::new(
        StatusCode::URI_TOO_LONG,
        format!("the request target (path and query) is over {MAX_TARGET} bytes"),
    )
}

/// What follows a head, by hyper's rules (RFC 9112 §6.3): a chunked
/// `Transfer-Encoding` wins over `Content-Length`; any other transfer
/// coding, or a `Content-Length` that is not one number, is refused (hyper
/// would refuse it too, without a body).
fn framing(http_11: bool, headers: &[httparse::Header<'_>]) -> Result<Body, ApiError> {
    let mut chunked = None;
    let mut length = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http_11 {
                return Err(ApiError::bad_request(
                    "an HTTP/1.0 request cannot have a Transfer-Encoding",
                ));
            }
            let last = header.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let value = digits(header.value)
                .ok_or_else(|| ApiError::bad_request("the Content-Length is not a number"))?;
            if length.is_some_and(|previous| previous != value) {
                return Err(ApiError::bad_request(
                    "the request has two different Content-Length values",
                ));
            }
            length = Some(value);
        }
    }
    match (chunked, length) {
        (Some(true), _) => Ok(Body::Chunked),
        (Some(false), _) => Err(ApiError::bad_request(
            "the last Transfer-Encoding of a request must be chunked",
        )),
        (None, Some(0) | None) => Ok(Body::None),
        (None, Some(length)) => Ok(Body::Sized(length)),
    }
}

/// A decimal number, as hyper reads a `Content-Length` (no sign, no space).
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// Follows a chunked body (RFC 9112 §7.1) to its end: chunk-size lines,
/// chunk data with its CRLF, the last chunk, trailer fields and the empty
/// line. Malformed framing is not judged here: hyper rejects it and closes
/// the connection, so where the gate thinks the body ends no longer matters.
enum Chunks {
    /// In a chunk-size line: the size so far, and whether its digits ended.
    Size { size: u64, digits_done: bool },
    /// In chunk data and its CRLF: bytes left.
    Data(u64),
    /// In the trailer section: whether at the start of a line.
    Trailers { line_start: bool },
}

impl Default for Chunks {
    fn default() -> Self {
        Chunks::Size {
            size: 0,
            digits_done: false,
        }
    }
}

impl Chunks {
    /// Moves over `bytes`; `Some(n)` when the body ends after `n` of them.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            match self {
                Chunks::Data(left) => {
                    let n = usize::try_from(*left)
                        .map_or(bytes.len() - i, |left| left.min(bytes.len() - i));
                    i += n;
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Chunks::default();
                    }
                }
                Chunks::Size { size, digits_done } => {
                    let byte = bytes[i];
                    i += 1;
                    if byte == b'\n' {
                        *self = match *size {
                            0 => Chunks::Trailers { line_start: true },
                            // The data, then its CRLF.
                            size => Chunks::Data(size.saturating_add(2)),
                        };
                    } else if !*digits_done {
                        match (byte as char).to_digit(16) {
                            Some(digit) => {
                                *size = size.saturating_mul(16).saturating_add(u64::from(digit))
                            }
                            None => *digits_done = true,
                        }
                    }
                }
                Chunks::Trailers { line_start } => {
                    let byte = bytes[i];
                    i += 1;
                    match byte {
                        b'\n' if *line_start => return Some(i),
                        b'\n' => *line_start = true,
                        b'\r' => {}
                        _ => *line_start = false,
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(result: Result<Option<(usize, Body)>, ApiError>) -> StatusCode {
        result.expect_err("refused").status
    }

    #[test]
    fn heads_are_measured_and_framed() {
        let head = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            inspect(head).unwrap(),
            Some((head.len() - 5, Body::Sized(5)))
        );
        let chunked =
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            inspect(chunked).unwrap(),
            Some((chunked.len(), Body::Chunked))
        );
        assert_eq!(inspect(b"GET / HTTP/1.1\r\nHost: h\r\n").unwrap(), None);
        assert_eq!(
            inspect(STAND_IN).unwrap(),
            Some((STAND_IN.len(), Body::None))
        );
        let stand_in = String::from_utf8_lossy(STAND_IN);
        assert!(stand_in.contains(&format!("\r\n{STAND_IN_MARKER}: ")));
        assert_eq!(
            inspect(b"\r\nGET / HTTP/1.0\r\n\r\n").unwrap(),
            Some((20, Body::None))
        );
    }

    #[test]
    fn heads_over_the_limits_or_malformed_are_refused() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x{i}: y\r\n")).collect();
        for (head, refusal) in [
            (
                format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET)),
                StatusCode::URI_TOO_LONG,
            ),
            (
                format!("GET /{}", "a".repeat(MAX_HEAD)),
                StatusCode::URI_TOO_LONG,
            ),
            (
                format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD)),
                StatusCode::URI_TOO_LONG,
            ),
            (
                format!("GET / HTTP/1.1\r\nx: {}", "a".repeat(MAX_HEAD)),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            (
                format!("GET / HTTP/1.1\r\n{many}\r\n"),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
        ] {
            assert_eq!(status(inspect(head.as_bytes())), refusal, "{:.60}", head);
        }
        for bad in [
            &b"\x16\x03\x01 hello\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(
                status(inspect(bad)),
                StatusCode::BAD_REQUEST,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let head = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut searched = 0;
        for end in 1..head.len() {
            assert!(!head_ended(&head[..end], &mut searched), "{end}");
        }
        assert!(head_ended(head, &mut searched));
        assert!(head_ended(b"GET / HTTP/1.1\n\n", &mut 0));
    }

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers() {
        let body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let first = 10 + 14 + 5;
        // In one piece and byte by byte alike.
        assert_eq!(Chunks::default().scan(body), Some(first));
        let mut chunks = Chunks::default();
        let end = (0..body.len()).find(|&i| chunks.scan(&body[i..=i]).is_some());
        assert_eq!(end, Some(first - 1));
        let trailers = &body[first..];
        assert_eq!(Chunks::default().scan(trailers), Some(trailers.len() - 4));
    }
}
