//! An OTLP/HTTP sink on loopback for measuring what traces cost the host
//! (BENCHMARKS.md): it reads each request whole (by its Content-Length,
//! as the host's exporter sends it) and answers 200, keeping nothing. On
//! a two-core machine the collector shares the cores with the host; a
//! sink that does more per request (parsing, a Python loop allocating
//! each body) weighs on the host's own figures as well.
//!
//!     cargo run --release -p durango-e2e --bin otlp_sink -- 4399
//!     OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4399 durango bench --scenario hello

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "4318".into());
    let listener = match TcpListener::bind(format!("127.0.0.1:{port}")) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("otlp_sink: cannot listen on 127.0.0.1:{port}: {error}");
            std::process::exit(1);
        }
    };
    eprintln!("otlp_sink: listening on http://127.0.0.1:{port}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve(stream));
    }
}

/// Answers the requests of one connection (the exporter keeps it alive)
/// until it closes; a body goes into one buffer, reused.
fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut answer = stream.try_clone()?;
    let mut requests = BufReader::with_capacity(1 << 20, stream);
    let (mut line, mut body) = (String::new(), Vec::new());
    loop {
        let mut length = 0;
        loop {
            line.clear();
            if requests.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        body.resize(length, 0);
        requests.read_exact(&mut body)?;
        answer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")?;
    }
}
