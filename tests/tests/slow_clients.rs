//! Slow and idle clients cannot hold the host's connections: a request head
//! that does not arrive in time is answered `408`, an idle connection is
//! closed, and past `--max-connections` a new connection is answered `503`;
//! ordinary requests are served meanwhile.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use durango_e2e::{request, wait_until, Host, HostOptions, Raw, KEY, WAIT};

const INSTANCES: &str = "/runtime/webhooks/durabletask/instances";

/// Added to every upper bound: a busy machine may be late, never early.
const SLACK: Duration = Duration::from_secs(15);

fn host(args: &[&str]) -> Host {
    let options = args
        .iter()
        .fold(HostOptions::with_apps(&[]), |options, arg| options.arg(arg));
    Host::start(options)
}

fn get() -> Vec<u8> {
    format!("GET {INSTANCES} HTTP/1.1\r\nhost: localhost\r\nx-functions-key: {KEY}\r\n\r\n")
        .into_bytes()
}

/// An ordinary request; how long it took.
fn list(host: &Host) -> Duration {
    let started = Instant::now();
    let answer = host.call("GET", INSTANCES, None);
    assert_eq!(answer.status, 200, "{}", answer.text);
    started.elapsed()
}

/// Fails unless `elapsed` is `timeout` or a little more.
fn assert_closed_after(elapsed: Duration, timeout: Duration) {
    assert!(
        elapsed >= timeout && elapsed < timeout + SLACK,
        "closed after {elapsed:?}; the timeout is {timeout:?}"
    );
}

/// A client that sends a request head a byte at a time and never ends it.
struct Slow {
    stream: TcpStream,
    opened: Instant,
    sent: usize,
    received: Vec<u8>,
    /// How long after opening the host closed the connection.
    closed: Option<Duration>,
}

const SLOW_HEAD: &[u8] =
    b"GET /runtime/webhooks/durabletask/instances HTTP/1.1\r\nhost: localhost\r\nx-slow: ";

impl Slow {
    fn connect(host: &Host) -> Slow {
        let opened = Instant::now();
        let stream = TcpStream::connect(host.base.trim_start_matches("http://")).expect("connect");
        stream.set_nonblocking(true).expect("non-blocking");
        Slow {
            stream,
            opened,
            sent: 0,
            received: Vec::new(),
            closed: None,
        }
    }

    /// Reads what the host sent, and unless it closed the connection,
    /// sends one more byte.
    fn trickle(&mut self) {
        let mut buf = [0; 4096];
        while self.closed.is_none() {
            match self.stream.read(&mut buf) {
                Ok(0) => self.closed = Some(self.opened.elapsed()),
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => self.closed = Some(self.opened.elapsed()),
            }
        }
        if self.closed.is_none() {
            let byte = SLOW_HEAD.get(self.sent).copied().unwrap_or(b'a');
            if self.stream.write(&[byte]).is_ok() {
                self.sent += 1;
            }
        }
    }
}

#[test]
fn hundreds_of_slow_clients_are_answered_408_and_closed_while_others_are_served() {
    let timeout = Duration::from_secs(5);
    let host = host(&["--header-timeout-ms", "5000"]);
    let mut slow: Vec<Slow> = (0..300).map(|_| Slow::connect(&host)).collect();
    let deadline = Instant::now() + timeout + SLACK;
    let mut served = 0;
    loop {
        for client in &mut slow {
            client.trickle();
        }
        let open = slow.iter().filter(|c| c.closed.is_none()).count();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} slow connections still open"
        );
        // Ordinary requests do not wait for the slow clients.
        if served < 5 {
            let took = list(&host);
            assert!(took < timeout, "an ordinary request took {took:?}");
            served += 1;
        }
        // The clients' pace: a byte per connection per round.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(served, 5, "the slow connections closed before the requests");
    for client in &slow {
        assert_closed_after(client.closed.expect("closed"), timeout);
        let text = String::from_utf8_lossy(&client.received);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
        assert!(
            text.contains(r#""error":"the request head did not arrive within 5 s""#),
            "{text}"
        );
    }
    list(&host);
}

#[test]
fn idle_connections_are_closed_quietly_after_their_timeouts() {
    let (head, idle) = (Duration::from_secs(1), Duration::from_secs(4));
    let host = host(&["--header-timeout-ms", "1000", "--idle-timeout-ms", "4000"]);

    // A new connection that never sends a byte: closed after the head
    // timeout, without an answer.
    let opened = Instant::now();
    assert!(Raw::connect(&host).closed());
    assert_closed_after(opened.elapsed(), head);

    // A kept-alive connection may wait for its next request longer than a
    // head may take to arrive...
    let mut kept = Raw::connect(&host);
    kept.send(&get());
    assert_eq!(kept.answer().status, 200);
    std::thread::sleep(2 * head);
    let asked = Instant::now();
    kept.send(&get());
    assert_eq!(kept.answer().status, 200);
    // ...and is closed, without an answer, once idle for the idle timeout.
    assert!(kept.closed());
    assert_closed_after(asked.elapsed(), idle);
}

#[test]
fn past_max_connections_a_new_connection_is_answered_503_until_one_closes() {
    // No head timeout closes the held connections during the test.
    let host = host(&[
        "--max-connections",
        "20",
        "--header-timeout-ms",
        "600000",
        "--rpc-listen",
        "127.0.0.1:0",
    ]);
    let mut held: Vec<Raw> = (0..20).map(|_| Raw::connect(&host)).collect();

    let mut refused = Raw::connect(&host);
    refused.send(&get());
    let answer = refused.answer();
    assert_eq!(answer.status, 503, "{}", answer.text);
    let message = answer.body["error"].as_str().unwrap_or_default();
    assert!(message.contains("--max-connections"), "{}", answer.text);
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(refused.closed());
    // Ordinary clients are told the same, on both listeners.
    assert_eq!(host.call("GET", INSTANCES, None).status, 503);
    let rpc = host.rpc_base.as_deref().expect("the RPC listener");
    let answer = request("GET", &format!("{rpc}instances"), &[], None);
    assert_eq!(answer.status, 503, "{}", answer.text);

    // Once one closes, a new connection is served again.
    drop(held.pop());
    wait_until("a new connection to be served", WAIT, || {
        (host.call("GET", INSTANCES, None).status == 200).then_some(())
    });
    // The held connections were served all along.
    let first = &mut held[0];
    first.send(&get());
    assert_eq!(first.answer().status, 200);
}
