use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use durango::bench::BenchArgs;
use durango::client::{check_lines, pinned_lines, timeline, version_lines, Client, ClientArgs};
use durango::fake_sms::{self, FakeSmsArgs};
use durango::serve::{serve, ServeArgs};
use durango::trace::LogFormat;

/// Many small, short-lived allocations on every step (messages, JSON,
/// guest stores): glibc's malloc was ~14 % of a busy host's CPU, and
/// mimalloc gave hello ~+20 % (BENCHMARKS.md change 18).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Durable orchestrations for WebAssembly components.
#[derive(Parser)]
#[command(name = "durango", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host: the HTTP API over the store (SQLite or PostgreSQL).
    Serve(ServeArgs),
    /// Run a local stand-in for Twilio's SMS API (for the demo and tests).
    FakeSms(FakeSmsArgs),
    /// Measure the engine on this machine (see BENCHMARKS.md).
    Bench(BenchArgs),
    /// Print the messages waiting in an instance's inbox, one JSON line
    /// each, read from the database itself: what a host starting on it
    /// would find.
    Inbox {
        id: String,
        /// The database: a SQLite file or a `postgres://` URL.
        #[arg(long, env = "DURANGO_DB", default_value = "durango.db")]
        db: String,
    },
    /// Create a function app in a new folder NAME: a hello-sequence
    /// orchestrator and activity, with the SDK and WIT files it builds with.
    New {
        /// rust, js or python.
        #[arg(long)]
        lang: String,
        /// The app's folder and name: a lower-case letter, then lower-case
        /// letters, digits, '-' or '_'.
        name: String,
    },
    /// Compile the function app in the current folder to NAME.wasm (NAME:
    /// the folder's), installing its toolchain on first use: in the app's
    /// folder, or under DURANGO_TOOLCHAIN_DIR when set (shared by apps).
    Build,
    /// Deploy a component (app name = file stem unless --name).
    Deploy {
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
        /// Let the app read this setting (repeatable); without any, it may
        /// read every setting.
        #[arg(long = "allow-setting", value_name = "NAME")]
        allow_settings: Vec<String>,
        /// Deploy nothing: replay the app's unfinished instances on this
        /// component and report which could move to it and where the
        /// others diverge.
        #[arg(long)]
        check: bool,
        /// Which unfinished instances move to the new version: none (they
        /// stay on the version they started on) or those whose history
        /// replays on it without diverging.
        #[arg(long, value_enum, default_value_t = durango::host::Upgrade::None)]
        upgrade: durango::host::Upgrade,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move an unfinished instance to the version that serves its
    /// orchestrator now, if its history replays there.
    Upgrade {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List an app's versions, one a line (digest, deployed, unfinished
    /// instances), or remove one that no instance uses.
    Versions {
        app: String,
        /// Remove this version (its digest, or a start of it of at least 4
        /// hex digits) instead of listing.
        #[arg(long, value_name = "VERSION")]
        remove: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start an orchestration.
    Start {
        orchestrator: String,
        /// The input, as JSON.
        #[arg(long)]
        input: Option<String>,
        /// The instance id (generated if absent).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Raise an external event on an instance.
    Raise {
        id: String,
        event: String,
        /// The event data, as JSON.
        data: Option<String>,
        /// Wait up to this many seconds for the instance to act on the event,
        /// then print its status (without it, print as soon as it is queued).
        #[arg(long, value_name = "SECONDS")]
        wait: Option<f64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an instance's status.
    Status {
        id: String,
        /// Also print its history as a timeline.
        #[arg(long)]
        history: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Terminate a running instance.
    Terminate {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List instances.
    List {
        /// Only these statuses (comma-separated, e.g. Running,Pending).
        #[arg(long)]
        status: Option<String>,
        /// Created at or after this time (ISO 8601).
        #[arg(long)]
        created_from: Option<String>,
        /// Created at or before this time (ISO 8601).
        #[arg(long)]
        created_to: Option<String>,
        /// Only ids starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// At most this many.
        #[arg(long)]
        top: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Suspend a running instance (events raised meanwhile are kept).
    Suspend {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Resume a suspended instance.
    Resume {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a Failed instance again from where it failed.
    Rewind {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start an instance's orchestrator again with the same input.
    Restart {
        id: String,
        /// Reuse the id (the instance must have finished).
        #[arg(long)]
        same_id: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete an instance's history, or finished instances by creation time.
    Purge {
        /// The instance; omit it to purge by --created-from/--created-to.
        id: Option<String>,
        #[arg(long)]
        created_from: Option<String>,
        #[arg(long)]
        created_to: Option<String>,
        /// Statuses to purge (default Completed,Failed,Terminated).
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The query parameters for whichever of these were given.
fn filters<'a>(given: &[(&'a str, Option<String>)]) -> Vec<(&'a str, String)> {
    given
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => run_server(args.log_format, serve(args)),
        Command::FakeSms(args) => run_server(LogFormat::Text, fake_sms::run(args)),
        Command::Bench(args) => run_server(LogFormat::Text, durango::bench::run(args)),
        Command::Inbox { id, db } => run_server(LogFormat::Text, print_inbox(id, db)),
        Command::New { lang, name } => durango::authoring::new(Path::new(""), &lang, &name),
        Command::Build => durango::authoring::build(Path::new(".")),
        command => run_client(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("durango: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a server's task on tokio, with its log lines in `format` and, when
/// the environment names an OTLP endpoint, its traces exported (the last
/// ones once the task has ended: `durango serve` ends on ctrl-c or SIGTERM).
fn run_server(
    format: LogFormat,
    task: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let telemetry = durango::trace::init(format);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    #[cfg(target_os = "linux")]
    runtime.on_thread_start(behind_the_writer);
    runtime
        .on_thread_park(durango::trace::flush_thread)
        .on_thread_stop(durango::trace::flush_thread);
    let outcome = runtime.enable_all().build()?.block_on(task);
    telemetry.shutdown();
    outcome
}

/// How far tokio's threads (episodes, activities, HTTP) stand back.
#[cfg(target_os = "linux")]
const WORKER_NICENESS: libc::c_int = 5;

/// Tokio's threads yield a core to the SQLite writer (and the epoch
/// ticker): every step of every instance waits for the writer's commit, so
/// a writer kept waiting for a core delays them all (BENCHMARKS.md change
/// 17). Lowering a thread's own priority needs no privilege; if it fails
/// the thread runs as before.
#[cfg(target_os = "linux")]
fn behind_the_writer() {
    // SAFETY: setpriority only reads its arguments; on Linux, PRIO_PROCESS
    // with who = 0 names the calling thread alone.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, WORKER_NICENESS);
    }
}

async fn print_inbox(id: String, db: String) -> anyhow::Result<()> {
    let store = durango::store::open(&db, durango::store::Durability::Full).await?;
    for (inbox_id, message) in store.inbox(id).await? {
        println!(
            "{}",
            serde_json::json!({ "id": inbox_id, "message": message })
        );
    }
    Ok(())
}

fn run_client(command: Command) -> anyhow::Result<()> {
    let answer = match &command {
        Command::Serve(_)
        | Command::FakeSms(_)
        | Command::Bench(_)
        | Command::Inbox { .. }
        | Command::New { .. }
        | Command::Build => {
            unreachable!("servers and authoring run on their own")
        }
        Command::Deploy {
            file,
            name,
            check: true,
            client,
            ..
        } => {
            let answer = Client::new(client)?.check(file, name.as_deref())?;
            print!("{}", check_lines(&answer.body));
            return Ok(());
        }
        Command::Deploy {
            file,
            name,
            allow_settings,
            upgrade,
            client,
            ..
        } => {
            let answer =
                Client::new(client)?.deploy(file, name.as_deref(), allow_settings, *upgrade)?;
            // On stderr: stdout stays the JSON answer, for scripts.
            for line in pinned_lines(&answer.body) {
                eprintln!("durango: {line}");
            }
            answer
        }
        Command::Upgrade { id, client } => Client::new(client)?.upgrade(id)?,
        Command::Versions {
            app,
            remove: None,
            client,
        } => {
            let answer = Client::new(client)?.versions(app)?;
            println!("{}", version_lines(&answer.body));
            return Ok(());
        }
        Command::Versions {
            app,
            remove: Some(version),
            client,
        } => {
            let answer = Client::new(client)?.remove_version(app, version)?;
            println!(
                "removed version {} of app {}",
                answer.body["version"].as_str().unwrap_or(version),
                answer.body["app"].as_str().unwrap_or(app)
            );
            return Ok(());
        }
        Command::Start {
            orchestrator,
            input,
            id,
            client,
        } => Client::new(client)?.start(orchestrator, input.as_deref(), id.as_deref())?,
        Command::Raise {
            id,
            event,
            data,
            wait,
            client,
        } => Client::new(client)?.raise(id, event, data.as_deref(), *wait)?,
        Command::Status {
            id,
            history,
            client,
        } => {
            let answer = Client::new(client)?.status(id, *history)?;
            if *history {
                let mut status = answer.body.clone();
                let events = timeline(&status);
                if let Some(map) = status.as_object_mut() {
                    map.remove("historyEvents");
                }
                println!("{}", serde_json::to_string_pretty(&status)?);
                println!("{events}");
                return Ok(());
            }
            answer
        }
        Command::Terminate { id, reason, client } => {
            Client::new(client)?.terminate(id, reason.as_deref())?
        }
        Command::List {
            status,
            created_from,
            created_to,
            prefix,
            top,
            client,
        } => Client::new(client)?.list(&filters(&[
            ("runtimeStatus", status.clone()),
            ("createdTimeFrom", created_from.clone()),
            ("createdTimeTo", created_to.clone()),
            ("instanceIdPrefix", prefix.clone()),
            ("top", top.map(|t| t.to_string())),
        ]))?,
        Command::Suspend { id, reason, client } => {
            Client::new(client)?.control(id, "suspend", reason.as_deref())?
        }
        Command::Resume { id, reason, client } => {
            Client::new(client)?.control(id, "resume", reason.as_deref())?
        }
        Command::Rewind { id, reason, client } => {
            Client::new(client)?.control(id, "rewind", reason.as_deref())?
        }
        Command::Restart {
            id,
            same_id,
            client,
        } => Client::new(client)?.restart(id, *same_id)?,
        Command::Purge {
            id,
            created_from,
            created_to,
            status,
            client,
        } => {
            if id.is_none() && created_from.is_none() {
                anyhow::bail!("give an instance id, or --created-from to purge by time");
            }
            Client::new(client)?.purge(
                id.as_deref(),
                &filters(&[
                    ("createdTimeFrom", created_from.clone()),
                    ("createdTimeTo", created_to.clone()),
                    ("runtimeStatus", status.clone()),
                ]),
            )?
        }
    };
    if answer.body.is_null() {
        println!("{}", answer.status);
    } else {
        println!("{}", serde_json::to_string_pretty(&answer.body)?);
    }
    Ok(())
}
