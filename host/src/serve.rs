//! `durango serve`: start the host and its HTTP listener.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::api;
use crate::host::{Host, HostConfig};
use crate::runtime::GuestLimits;
use crate::settings::Settings;
use crate::store::Durability;

/// The hot cache's bounds unless told otherwise (the benchmark runs with
/// them too).
pub const DEFAULT_HOT_INSTANCES: usize = 1024;
pub const DEFAULT_HOT_MEMORY_MB: usize = 2048;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The database: a SQLite file (created on first use), or a
    /// `postgres://user@host:port/db` URL, where several hosts may share one.
    #[arg(long, env = "DURANGO_DB", default_value = "durango.db")]
    pub db: String,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "DURANGO_LISTEN", default_value = "127.0.0.1:7071")]
    pub listen: SocketAddr,
    /// Deploy these components at start-up (app name = file stem).
    #[arg(long = "deploy", value_name = "FILE.wasm")]
    pub deploy: Vec<PathBuf>,
    /// App settings file (TOML; a [secrets] table holds secret settings).
    #[arg(long, env = "DURANGO_SETTINGS")]
    pub settings: Option<PathBuf>,
    /// `full` syncs every commit to disk before answering; `normal` may lose
    /// the last commits on power loss (never on a process crash).
    #[arg(long, env = "DURANGO_DURABILITY", value_enum, default_value = "full")]
    pub durability: Durability,
    /// Waiting instances kept in memory; 0 replays history for every episode.
    #[arg(long, env = "DURANGO_HOT_INSTANCES", default_value_t = DEFAULT_HOT_INSTANCES)]
    pub hot_instances: usize,
    /// Linear memory the hot instances' guests may hold together, in MiB:
    /// a JavaScript or Python instance holds an interpreter's heap, ten or
    /// twenty times a Rust one's. 0 keeps none hot.
    #[arg(long, env = "DURANGO_HOT_MEMORY_MB", default_value_t = DEFAULT_HOT_MEMORY_MB)]
    pub hot_memory_mb: usize,
    /// Timers due within this many milliseconds are held in memory; later
    /// ones stay in the database until then.
    #[arg(long, env = "DURANGO_TIMER_HORIZON_MS", default_value_t = 600_000)]
    pub timer_horizon_ms: u64,
    /// How long a partition lease lasts when hosts share a PostgreSQL
    /// database: a host that stops renewing (killed, paused, cut off) has
    /// its instances taken over after about this long.
    #[arg(long, env = "DURANGO_LEASE_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(300..=600_000))]
    pub lease_ms: u64,
    /// Activities that may run at once.
    #[arg(long, env = "DURANGO_ACTIVITY_WORKERS", default_value_t = 64)]
    pub activity_workers: usize,
    /// Largest request body accepted, in bytes (deploys excepted).
    #[arg(long, env = "DURANGO_MAX_BODY", default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Time a client has to send a complete request head, in milliseconds:
    /// from the connection's start, or from the first byte of a later
    /// request on a kept-alive connection.
    #[arg(long, env = "DURANGO_HEADER_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
    /// A kept-alive connection with no new request for this many
    /// milliseconds after an answer is closed.
    #[arg(long, env = "DURANGO_IDLE_TIMEOUT_MS", default_value_t = 75_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// Open connections, both listeners together; past them a new
    /// connection is answered 503. Default 10,000, or fewer if the
    /// open-files limit is lower.
    #[arg(long, env = "DURANGO_MAX_CONNECTIONS")]
    pub max_connections: Option<NonZeroUsize>,
    /// Longest an orchestrator may run between two waits, in milliseconds.
    #[arg(long, env = "DURANGO_ORCHESTRATOR_STEP_MS", default_value_t = 10_000)]
    pub orchestrator_step_ms: u64,
    /// Default time limit of one activity attempt, in milliseconds.
    #[arg(long, env = "DURANGO_ACTIVITY_TIMEOUT_MS", default_value_t = 300_000)]
    pub activity_timeout_ms: u64,
    /// The base URL people reach this host at, for the links activities hand
    /// out (e.g. an approval link); default http://LISTEN-ADDRESS.
    #[arg(long, env = "DURANGO_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Webhook that gets every instance's lifecycle events (repeatable).
    #[arg(
        long = "notify-url",
        env = "DURANGO_NOTIFY_URLS",
        value_delimiter = ','
    )]
    pub notify_urls: Vec<String>,
    /// Also serve the management routes under /durabletask/ without a key
    /// (the clients' `rpcBaseUrl`, e.g. 127.0.0.1:17071); loopback only.
    #[arg(long, env = "DURANGO_RPC_LISTEN")]
    pub rpc_listen: Option<SocketAddr>,
    /// Also serve Prometheus metrics at /metrics on this address, without a
    /// key (for a private scrape network; /metrics on the main listener
    /// needs the key).
    #[arg(long, env = "DURANGO_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Linear memory one guest instance may use, in MiB.
    #[arg(long, env = "DURANGO_GUEST_MEMORY_MB", default_value_t = 256)]
    pub guest_memory_mb: usize,
    /// Keep compiled components in this folder too, by digest: deploying a
    /// component compiled before skips compiling it (a JavaScript app's
    /// interpreter takes tens of seconds). Only hosts may write to it: what
    /// is in it runs as machine code.
    #[arg(long, env = "DURANGO_COMPILE_CACHE", value_name = "DIR")]
    pub compile_cache: Option<PathBuf>,
    /// Log lines on stderr: text, or one JSON object a line (with the
    /// instance id wherever there is one) for log shippers.
    #[arg(long, env = "DURANGO_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::trace::LogFormat,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.settings.as_deref())?;
    // Bound first: the links handed to activities name this address.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    let key_from_env = std::env::var("DURANGO_KEY").ok().filter(|k| !k.is_empty());
    let config = HostConfig {
        db: args.db.clone(),
        durability: args.durability,
        settings,
        limits: GuestLimits {
            orchestrator_step: Duration::from_millis(args.orchestrator_step_ms),
            activity_attempt: Duration::from_millis(args.activity_timeout_ms),
            memory_bytes: args.guest_memory_mb << 20,
        },
        hot_instances: args.hot_instances,
        hot_bytes: args.hot_memory_mb.saturating_mul(1 << 20),
        activity_workers: args.activity_workers,
        timer_horizon: Duration::from_millis(args.timer_horizon_ms),
        lease: Duration::from_millis(args.lease_ms),
        key: key_from_env.clone(),
        notify_urls: args.notify_urls.clone(),
        notify_secret: std::env::var("DURANGO_NOTIFY_SECRET")
            .ok()
            .filter(|s| !s.is_empty()),
        public_url: public_url.trim_end_matches('/').to_string(),
        compile_cache: args.compile_cache,
    };
    let connections = api::listen::Connections::new(
        max_connections(args.max_connections),
        api::listen::Timeouts {
            head: Duration::from_millis(args.header_timeout_ms),
            idle: Duration::from_millis(args.idle_timeout_ms),
        },
    );
    let host = Host::start(config)
        .await
        .with_context(|| format!("cannot start on the database {}", args.db))?;
    for file in &args.deploy {
        let app = file
            .file_stem()
            .and_then(|s| s.to_str())
            .context("a --deploy file needs a name")?;
        let wasm =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let deployed = host
            .deploy(app, &wasm, None)
            .await
            .map_err(|e| anyhow::anyhow!("cannot deploy {}: {e}", file.display()))?;
        let names: Vec<&str> = deployed.functions.iter().map(|f| f.name.as_str()).collect();
        println!(
            "deployed {} ({}): {}",
            deployed.app,
            &deployed.version[..12],
            names.join(", ")
        );
    }
    let rpc = match args.rpc_listen {
        Some(rpc) => {
            if !rpc.ip().is_loopback() {
                anyhow::bail!("refusing to bind the keyless RPC listener to {rpc}: it takes loopback addresses only");
            }
            let rpc_listener = tokio::net::TcpListener::bind(rpc)
                .await
                .with_context(|| format!("cannot listen on {rpc}"))?;
            println!(
                "rpc listening on http://{}{}/",
                rpc_listener.local_addr()?,
                api::RPC_PREFIX
            );
            let rpc_app = api::rpc_router(host.clone(), args.max_body);
            Some(api::listen::serve(
                rpc_listener,
                rpc_app,
                connections.clone(),
                asked_to_stop(),
            ))
        }
        None => None,
    };
    let metrics = match args.metrics_listen {
        Some(at) => {
            let metrics_listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at}"))?;
            println!(
                "metrics listening on http://{}/metrics",
                metrics_listener.local_addr()?
            );
            Some(api::listen::serve(
                metrics_listener,
                api::metrics_router(host.clone()),
                connections.clone(),
                asked_to_stop(),
            ))
        }
        None => None,
    };
    // Printed last: scripts wait for this line before they talk to us.
    println!("listening on http://{address}");
    match key_from_env {
        Some(_) => println!("system key: taken from DURANGO_KEY"),
        None => println!("system key: {}", host.key),
    }
    let signals = host.signals.clone();
    let main = api::listen::serve(
        listener,
        api::router(host, args.max_body),
        connections,
        async move {
            asked_to_stop().await;
            // Live pages' streams end, so the listener can finish.
            signals.stop();
        },
    );
    let rpc = async {
        if let Some(rpc) = rpc {
            rpc.await;
        }
    };
    let metrics = async {
        if let Some(metrics) = metrics {
            metrics.await;
        }
    };
    tokio::join!(main, rpc, metrics);
    Ok(())
}

/// Open connections by default, when the open-files limit allows.
const MAX_CONNECTIONS: usize = 10_000;
/// Descriptors kept for the rest of the host: the database, outgoing HTTP
/// (activities, notifications), the listeners.
const RESERVED_FILES: usize = 256;

/// The cap on open connections: the one given, else `MAX_CONNECTIONS` or
/// as many as the open-files limit leaves room for. A connection past the
/// limit would fail to be accepted, with no answer at all.
fn max_connections(given: Option<NonZeroUsize>) -> usize {
    let files = raise_open_files_limit();
    let room = files.map(|files| files.saturating_sub(RESERVED_FILES).max(files / 2));
    match (given, room) {
        (Some(max), Some(room)) if max.get() > room => {
            tracing::warn!(
                max_connections = max.get(),
                open_files_limit = files,
                "--max-connections is more than the open-files limit leaves room for"
            );
            max.get()
        }
        (Some(max), _) => max.get(),
        (None, room) => room.map_or(MAX_CONNECTIONS, |room| room.min(MAX_CONNECTIONS)),
    }
}

/// How many files the host may open, after raising its soft limit to the
/// hard one (as Go programs do): many shells start with a soft limit of
/// 1,024, which a busy listener outgrows.
#[cfg(target_os = "linux")]
fn raise_open_files_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                ..limit
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(not(target_os = "linux"))]
fn raise_open_files_limit() -> Option<usize> {
    None
}

/// Both listeners stop taking connections on ctrl-c or SIGTERM, and finish
/// the ones they have (then the last spans are exported).
async fn asked_to_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
