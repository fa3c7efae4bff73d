//! wasmtime: the engine, the linker, compiled apps, and running a guest as an
//! orchestrator or as an activity.

mod bindings;
mod guest;
mod idle;
mod links;
mod sandbox;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreLimitsBuilder, Trap,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

pub use bindings::{ActivityContext, FunctionKind, PollResult};
use bindings::{FunctionApp, FunctionAppPre};
use guest::{ActivityCall, GuestState, Role, OUTPUT_CAPACITY};
use idle::IdleGuests;
use sandbox::OrchestrationClock;
pub use sandbox::RandomKey;

use crate::engine::replay::{Cue, Nondeterminism, Replay};
use crate::links::LinkSigner;
use crate::metrics::{self, Metrics, OrchestratorExport, TrapKind};
use crate::settings::Settings;

/// How a guest's linear memory sits in the pool's address space.
#[derive(Debug, Clone, Copy)]
enum MemoryLayout {
    /// wasmtime's default: 4 GiB reserved for each memory, with guard
    /// regions, so compiled code needs no bounds check on a load or store
    /// (an access out of bounds lands in the guard and traps). An
    /// interpreter guest does little else: its calls cost ~25 % less than
    /// with checks (BENCHMARKS.md, session 12). The pool reserves it for
    /// every slot up front, ~10 TiB of address space at the defaults, none
    /// of it backed by memory.
    Guarded,
    /// Each memory reserves only this many bytes (the guest limit) and the
    /// compiled code checks bounds: where the address space cannot hold the
    /// guarded layout (`ulimit -v`, or tens of thousands of hot instances).
    Checked(u64),
}

fn engine_config(pool: &PoolingAllocationConfig, layout: MemoryLayout) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if let MemoryLayout::Checked(reservation) = layout {
        config.memory_reservation(reservation);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool.clone()));
    config
}

/// How often the epoch ticks; guest time limits are counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What one guest instance may hold in the pool. A Rust `wasm32-wasip2`
/// component has one memory, two tables and a handful of core instances;
/// a component that needs more is refused at deploy (it fails to start).
const CORE_INSTANCES_PER_GUEST: u32 = 16;
const MEMORIES_PER_GUEST: u32 = 2;
const TABLES_PER_GUEST: u32 = 4;

/// Bytes of a freed guest's memory (and tables) reset in place rather than
/// handed back to the kernel: `madvise` on every freed guest cost ~6 % of
/// the workers' time plus TLB shootdowns on the other core.
const KEEP_RESIDENT: usize = 1 << 20;

/// A guest is used again until it has served this many uses or grown its
/// memory this far (see `Guest::keep_in`).
const USES_PER_GUEST: u32 = 1000;
const MEMORY_PER_GUEST: usize = 32 << 20;

/// Most orchestrator guests kept for reuse once their orchestration ended
/// (see `Runtime::recycle`), and the linear memory they may hold together:
/// as many as start at once under load (a group commit ends many
/// orchestrations at once: with 16, a Python hello sequence at concurrency
/// 64 still instantiated for a quarter of its orchestrations), within what
/// 64 JavaScript or Python guests hold.
const SPARE_ORCHESTRATORS: usize = 64;
const SPARE_MEMORY: usize = 640 << 20;

/// Limits that keep a guest from hurting the host.
#[derive(Debug, Clone)]
pub struct GuestLimits {
    /// Longest an orchestrator may run between two waits.
    pub orchestrator_step: Duration,
    /// Default time limit for one activity attempt.
    pub activity_attempt: Duration,
    /// Linear memory one guest instance may grow to.
    pub memory_bytes: usize,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            orchestrator_step: Duration::from_secs(10),
            activity_attempt: Duration::from_secs(300),
            memory_bytes: 256 << 20,
        }
    }
}

/// A function an app exports.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct FunctionInfo {
    pub name: String,
    pub kind: String,
}

/// A component checked and compiled at deploy time.
pub struct Compiled {
    pub version: String,
    pub compiled: Vec<u8>,
    pub functions: Vec<FunctionInfo>,
}

/// The settings an app's deployment lets it read; `None` allows all.
pub type AllowedSettings = Option<Arc<BTreeSet<String>>>;

/// A version ready to instantiate, with what its deployment allows.
#[derive(Clone)]
struct LoadedApp {
    pre: FunctionAppPre<GuestState>,
    allowed: AllowedSettings,
}

/// A guest stopped without finishing its call normally.
#[derive(Debug, Clone)]
pub struct GuestFault(pub String);

impl std::fmt::Display for GuestFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Runtime {
    engine: Engine,
    /// One permit per guest instance the pool can hold: instantiation waits
    /// for a free slot instead of failing when the pool is full.
    slots: Arc<Semaphore>,
    /// Activity guests between calls (as many as there are activity
    /// workers).
    idle_activities: IdleGuests<Guest>,
    /// Orchestrator guests whose orchestration ended, for the next one.
    spare_orchestrators: IdleGuests<Guest>,
    linker: Linker<GuestState>,
    loaded: Mutex<HashMap<String, LoadedApp>>,
    /// A folder of compiled components by digest (see `with_compile_cache`).
    compile_cache: Option<PathBuf>,
    settings: Arc<Settings>,
    limits: GuestLimits,
    /// Keys each activity call's randomness.
    random_key: RandomKey,
    /// Signs the links activities hand to people.
    links: Arc<LinkSigner>,
    metrics: Arc<Metrics>,
}

impl Runtime {
    /// `orchestrators` is the most orchestrator guests alive at once (hot
    /// and running), `activity_workers` the most activities running at once.
    /// The pooling allocator reserves a slot for each guest that can be
    /// alive (those, the idle activity guests, the spare orchestrators and
    /// a deploy's check) up front, so a store costs no mmap/munmap and its
    /// memory starts from a copy-on-write image.
    pub fn new(
        settings: Arc<Settings>,
        random_key: RandomKey,
        links: Arc<LinkSigner>,
        limits: GuestLimits,
        orchestrators: usize,
        activity_workers: usize,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Runtime> {
        let guests = orchestrators + SPARE_ORCHESTRATORS + 2 * activity_workers + 1;
        let instances = u32::try_from(guests)
            .map_err(|_| anyhow::anyhow!("too many guest instances: {guests}"))?;
        let memory = limits.memory_bytes.next_multiple_of(1 << 16);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(instances)
            .max_core_instances_per_component(CORE_INSTANCES_PER_GUEST)
            .total_core_instances(instances * CORE_INSTANCES_PER_GUEST)
            .max_memories_per_component(MEMORIES_PER_GUEST)
            .total_memories(instances * MEMORIES_PER_GUEST)
            .max_tables_per_component(TABLES_PER_GUEST)
            .total_tables(instances * TABLES_PER_GUEST)
            .total_stacks(instances)
            .max_memory_size(memory)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let engine = Engine::new(&engine_config(&pool, MemoryLayout::Guarded)).or_else(|error| {
            tracing::info!(
                %error,
                "guest memories cannot each have a 4 GiB reservation here: they reserve {} MiB and check bounds",
                memory >> 20
            );
            Engine::new(&engine_config(&pool, MemoryLayout::Checked(memory as u64)))
        })?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("durango-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        FunctionApp::add_to_linker::<_, wasmtime::component::HasSelf<GuestState>>(
            &mut linker,
            |s| s,
        )?;
        Ok(Runtime {
            engine,
            slots: Arc::new(Semaphore::new(guests)),
            // As many as run at once; each at most `MEMORY_PER_GUEST`.
            idle_activities: IdleGuests::new(activity_workers, usize::MAX),
            spare_orchestrators: IdleGuests::new(SPARE_ORCHESTRATORS, SPARE_MEMORY),
            linker,
            loaded: Mutex::new(HashMap::new()),
            compile_cache: None,
            settings,
            limits,
            random_key,
            links,
            metrics,
        })
    }

    /// Keeps compiled components in `folder` too, by digest and wasmtime
    /// build, so that deploying a component this host compiled before (to
    /// another database: a test suite's, a new environment's) skips the
    /// compilation. A JavaScript or Python app carries its interpreter:
    /// tens of seconds of compiling. The folder must be one only hosts
    /// write to: what is in it is loaded as machine code.
    pub fn with_compile_cache(mut self, folder: Option<PathBuf>) -> Runtime {
        self.compile_cache = folder;
        self
    }

    /// Where the compile cache keeps `version` for this engine.
    fn cached_path(&self, version: &str) -> Option<PathBuf> {
        use std::hash::{Hash, Hasher};
        let mut engine = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine);
        let folder = self.compile_cache.as_ref()?;
        Some(folder.join(format!("{version}-{:016x}.cwasm", engine.finish())))
    }

    /// Checks that `wasm` is a Durango function app, compiles it (or takes
    /// it from the compile cache) and lists its functions. The error says
    /// why the bytes were refused.
    pub async fn compile(&self, wasm: &[u8], allowed: AllowedSettings) -> Result<Compiled, String> {
        let version = hex(&Sha256::digest(wasm));
        let cached = self.cached_path(&version);
        let hit = cached.as_ref().and_then(|path| {
            let compiled = std::fs::read(path).ok()?;
            // SAFETY: the cache holds what `Component::serialize` wrote on
            // a host of this build (the file name carries the engine's
            // hash), in a folder only hosts write to.
            let component = unsafe { Component::deserialize(&self.engine, &compiled) }.ok()?;
            Some((component, compiled))
        });
        let was_cached = hit.is_some();
        let (component, compiled) = match hit {
            Some(hit) => hit,
            None => {
                let component = self.compile_wasm(wasm.to_vec()).await?;
                let compiled = component
                    .serialize()
                    .map_err(|e| format!("cannot serialize the compiled component: {e}"))?;
                (component, compiled)
            }
        };
        let pre = self.prepare(&component)?;
        if let (Some(path), false) = (&cached, was_cached) {
            keep_compiled(path, &compiled);
        }
        let app = LoadedApp { pre, allowed };
        let functions = self.list_functions(&app).await?;
        self.loaded
            .lock()
            .expect("app cache")
            .insert(version.clone(), app);
        Ok(Compiled {
            version,
            compiled,
            functions,
        })
    }

    fn prepare(&self, component: &Component) -> Result<FunctionAppPre<GuestState>, String> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            format!(
                "the component imports something Durango does not provide: {}",
                root_cause(&e)
            )
        })?;
        FunctionAppPre::new(pre).map_err(|e| {
            format!(
                "the component does not export the durango:orchestration function-app world: {}",
                root_cause(&e)
            )
        })
    }

    async fn list_functions(&self, loaded: &LoadedApp) -> Result<Vec<FunctionInfo>, String> {
        let Guest { mut store, app, .. } = self
            .instantiate(loaded, Role::Activity(ActivityCall::default()))
            .await
            .map_err(|e| format!("the component failed to start: {e}"))?;
        let functions = app
            .durango_orchestration_app()
            .call_functions(&mut store)
            .await
            .map_err(|e| {
                format!(
                    "the component's function list failed: {}",
                    fault(&store, &e, &self.metrics)
                )
            })?;
        Ok(functions
            .into_iter()
            .map(|f| FunctionInfo {
                name: f.name,
                kind: match f.kind {
                    FunctionKind::Orchestrator => "orchestrator",
                    FunctionKind::Activity => "activity",
                }
                .to_string(),
            })
            .collect())
    }

    /// Makes a stored version ready to instantiate by deserializing its
    /// compiled form. Where this host's engine cannot read that (another
    /// wasmtime, other engine settings such as the memory layout), it
    /// compiles the version again and answers the new compiled form, for
    /// the caller to store in place of the old one.
    pub async fn load(
        &self,
        version: &str,
        compiled: &[u8],
        wasm: &[u8],
        allowed: AllowedSettings,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        if self.loaded.lock().expect("app cache").contains_key(version) {
            return Ok(None);
        }
        // SAFETY: the bytes were produced by `Component::serialize` on a
        // host and stored in our own database; wasmtime refuses those of
        // another engine.
        let (component, recompiled) =
            match unsafe { Component::deserialize(&self.engine, compiled) } {
                Ok(component) => (component, None),
                Err(_) => {
                    let component = self
                        .compile_wasm(wasm.to_vec())
                        .await
                        .map_err(anyhow::Error::msg)?;
                    let fresh = component.serialize()?;
                    (component, Some(fresh))
                }
            };
        let pre = self.prepare(&component).map_err(anyhow::Error::msg)?;
        self.loaded
            .lock()
            .expect("app cache")
            .insert(version.to_string(), LoadedApp { pre, allowed });
        Ok(recompiled)
    }

    /// Compiles `wasm` off the async threads: a JavaScript or Python app's
    /// interpreter takes tens of seconds.
    async fn compile_wasm(&self, wasm: Vec<u8>) -> Result<Component, String> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || Component::new(&engine, &wasm))
            .await
            .map_err(|e| format!("compilation stopped: {e}"))?
            .map_err(|e| format!("not a valid WebAssembly component: {}", root_cause(&e)))
    }

    /// Drops a version from memory: its compiled component and its idle
    /// guests. A guest of it still running keeps what it holds until it
    /// ends.
    pub fn unload(&self, version: &str) {
        self.loaded.lock().expect("app cache").remove(version);
        self.idle_activities.forget(version);
        self.spare_orchestrators.forget(version);
    }

    pub fn is_loaded(&self, version: &str) -> bool {
        self.loaded.lock().expect("app cache").contains_key(version)
    }

    fn app(&self, version: &str) -> Result<LoadedApp, GuestFault> {
        self.loaded
            .lock()
            .expect("app cache")
            .get(version)
            .cloned()
            .ok_or_else(|| GuestFault(format!("app version {version} is not loaded")))
    }

    async fn instantiate(&self, loaded: &LoadedApp, role: Role) -> Result<Guest, GuestFault> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| GuestFault("the runtime is shutting down".into()))?;
        let began = Instant::now();
        let output = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let metric_role = role.metric();
        let wasi = role.wasi(&output);
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(100)
            .build();
        let state = GuestState::new(
            role,
            self.settings.clone(),
            loaded.allowed.clone(),
            self.links.clone(),
            wasi,
            output,
            limits,
        );
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_async_yield_and_update(1);
        let app = loaded
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| {
                let why = fault(&store, &e, &self.metrics);
                GuestFault(format!("instantiation failed: {why}"))
            })?;
        self.metrics
            .guest_instantiated(metric_role, began.elapsed());
        Ok(Guest {
            store,
            app,
            uses: 0,
            _slot: slot,
        })
    }

    /// An orchestrator instance of `version` over `replay`: a spare guest
    /// of the version if there is one, else a fresh one.
    pub async fn orchestrator(
        &self,
        version: &str,
        replay: Replay,
    ) -> Result<Orchestrator, GuestFault> {
        let clock = OrchestrationClock::default();
        clock.set(replay.now());
        let role = Role::Orchestrator {
            replay: Box::new(replay),
            clock,
        };
        let guest = match self.spare_orchestrators.take(version) {
            Some(mut guest) => {
                guest.store.data_mut().serve_as(role);
                self.metrics.guest_reused(metrics::Role::Orchestrator);
                guest
            }
            None => {
                let mut guest = self.instantiate(&self.app(version)?, role).await?;
                self.warm_up(&mut guest).await?;
                guest
            }
        };
        Ok(Orchestrator {
            guest,
            version: version.to_string(),
            ended: false,
            step_ticks: ticks(self.limits.orchestrator_step),
            metrics: self.metrics.clone(),
        })
    }

    /// Runs a fresh orchestrator guest's one-time start-up before its first
    /// orchestration: an interpreter's runtime seeds its own generators
    /// from WASI's randomness on its first call (componentize-py draws 2.5
    /// KB). Then its WASI starts afresh, so a fresh guest begins each
    /// orchestration with its randomness where a reused one begins it: at
    /// the start of the stream the instance id seeds. Otherwise a replay in
    /// a fresh guest would draw other values than the first run drew in a
    /// reused one.
    async fn warm_up(&self, guest: &mut Guest) -> Result<(), GuestFault> {
        let Guest { store, app, .. } = guest;
        app.durango_orchestration_app()
            .call_functions(&mut *store)
            .await
            .map_err(|e| {
                let why = fault(store, &e, &self.metrics);
                GuestFault(format!("the guest failed to start: {why}"))
            })?;
        store.data_mut().restart_sandbox();
        Ok(())
    }

    /// Takes back an orchestrator guest its instance no longer needs. It
    /// is kept for the next orchestration of its version when it ran its
    /// orchestration to the end (no trap, not cut short by a terminate)
    /// and the guest allows reuse; otherwise it is dropped.
    pub fn recycle(&self, orchestrator: Orchestrator) {
        let Orchestrator {
            guest,
            version,
            ended,
            ..
        } = orchestrator;
        if ended && guest.store.data().reusable {
            guest.keep_in(&self.spare_orchestrators, &version);
        }
    }

    /// Runs one activity attempt to completion (or its time limit).
    /// `(execution, traceparent)`: the instance's internal key, and the
    /// `traceparent` its outgoing HTTP requests carry when traced.
    pub async fn run_activity(
        &self,
        version: &str,
        name: &str,
        input: &str,
        context: ActivityContext,
        (execution, traceparent): (i64, Option<&crate::trace::Parent>),
        time_limit: Option<Duration>,
    ) -> Result<String, String> {
        let limit = time_limit.unwrap_or(self.limits.activity_attempt);
        let loaded = self.app(version).map_err(|e| e.0)?;
        let run = async {
            let mut guest = match self.idle_activities.take(version) {
                Some(guest) => {
                    self.metrics.guest_reused(metrics::Role::Activity);
                    guest
                }
                None => self
                    .instantiate(&loaded, Role::Activity(ActivityCall::default()))
                    .await
                    .map_err(|e| e.0)?,
            };
            guest.store.data_mut().begin_call(
                &self.random_key,
                (&context.instance_id, execution),
                &context.idempotency_key,
                traceparent,
            );
            guest.uses += 1;
            let result = guest
                .app
                .durango_orchestration_activity()
                .call_run(&mut guest.store, name, input, &context)
                .await;
            match result {
                Ok(outcome) => {
                    guest.keep_in(&self.idle_activities, version);
                    outcome
                }
                // A trap leaves the guest unusable: it is dropped.
                Err(e) => Err(fault(&guest.store, &e, &self.metrics)),
            }
        };
        match tokio::time::timeout(limit, run).await {
            Ok(outcome) => outcome.map_err(|e| self.settings.redact(&e)),
            Err(_) => Err(format!(
                "activity {name} exceeded its time limit of {limit:?}"
            )),
        }
    }
}

/// A live guest instance and its pool slot. The store is declared first so
/// it is dropped (giving its memory back to the pool) before the permit
/// lets the next instantiation take the slot.
struct Guest {
    store: wasmtime::Store<GuestState>,
    app: FunctionApp,
    /// Activity calls or orchestrations the guest has served.
    uses: u32,
    _slot: OwnedSemaphorePermit,
}

impl Guest {
    /// The linear memory it holds.
    fn memory(&self) -> usize {
        self.store.data().limits.memory
    }

    /// Keeps it in `idle` for the next use of `version`, unless it is worn:
    /// it has served `USES_PER_GUEST` uses, grown past `MEMORY_PER_GUEST`,
    /// or filled half its output buffer. Then it is dropped, and a fresh
    /// one starts from the clean image when needed.
    fn keep_in(self, idle: &IdleGuests<Guest>, version: &str) {
        let memory = self.memory();
        let worn = self.uses >= USES_PER_GUEST
            || memory > MEMORY_PER_GUEST
            || self.store.data().output_used() > OUTPUT_CAPACITY / 2;
        if !worn {
            idle.keep(version, self, memory);
        }
    }
}

/// An orchestrator instance: a store whose guest holds the running
/// orchestration in its memory.
pub struct Orchestrator {
    guest: Guest,
    version: String,
    /// The guest's orchestration ran to its end: it completed, failed or
    /// continued as new.
    ended: bool,
    step_ticks: u64,
    metrics: Arc<Metrics>,
}

impl Orchestrator {
    pub fn replay(&mut self) -> &mut Replay {
        match &mut self.guest.store.data_mut().role {
            Role::Orchestrator { replay, .. } => replay,
            Role::Activity(_) => unreachable!("an Orchestrator always has the orchestrator role"),
        }
    }

    /// The linear memory the guest holds, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.guest.memory()
    }

    /// Reveals a history event to the guest, moving its clock along.
    pub fn reveal(&mut self, event: &crate::engine::history::HistoryEvent) {
        self.guest
            .store
            .data_mut()
            .reveal(|replay| replay.reveal(event));
    }

    /// Reveals queued history up to the next event the guest acts on (see
    /// `Replay::reveal_next`), moving its clock along.
    pub fn reveal_next(&mut self) -> Option<Cue> {
        self.guest.store.data_mut().reveal_next(true)
    }

    /// Gives the next call its step's time limit. A replay the guest takes
    /// on by `advance` stops at half of it, so that the host's own loop
    /// goes on in another call before the limit traps the guest.
    fn arm(&mut self) {
        let step = EPOCH_TICK * u32::try_from(self.step_ticks).unwrap_or(u32::MAX);
        self.guest.store.data_mut().replay_until = Some(Instant::now() + step / 2);
        self.guest.store.epoch_deadline_trap();
        self.guest.store.set_epoch_deadline(self.step_ticks);
    }

    pub async fn start(&mut self, name: &str, input: &str) -> Result<PollResult, GuestFault> {
        self.arm();
        self.metrics.orchestrator_called(OrchestratorExport::Start);
        self.guest.uses += 1;
        let Guest { store, app, .. } = &mut self.guest;
        let result = app
            .durango_orchestration_orchestrator()
            .call_start(&mut *store, name, input)
            .await;
        self.polled(result)
    }

    pub async fn resume(&mut self) -> Result<PollResult, GuestFault> {
        self.arm();
        self.metrics.orchestrator_called(OrchestratorExport::Resume);
        let Guest { store, app, .. } = &mut self.guest;
        let result = app
            .durango_orchestration_orchestrator()
            .call_resume(&mut *store)
            .await;
        self.polled(result)
    }

    /// Notes whether the orchestration ended (a trap leaves the guest
    /// unusable, and says why in words).
    fn polled(&mut self, result: wasmtime::Result<PollResult>) -> Result<PollResult, GuestFault> {
        let result = result.map_err(|e| GuestFault(fault(&self.guest.store, &e, &self.metrics)));
        self.ended = matches!(&result, Ok(poll) if !matches!(poll, PollResult::Pending));
        result
    }
}

fn ticks(limit: Duration) -> u64 {
    (limit.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn root_cause(error: &wasmtime::Error) -> String {
    error.root_cause().to_string()
}

/// Which kind of trap `trap` is, for the metrics.
fn trap_kind(trap: &Trap) -> TrapKind {
    match trap {
        Trap::Interrupt => TrapKind::Epoch,
        Trap::OutOfFuel => TrapKind::OutOfFuel,
        Trap::MemoryOutOfBounds | Trap::HeapMisaligned | Trap::TableOutOfBounds => TrapKind::Memory,
        Trap::StackOverflow => TrapKind::StackOverflow,
        Trap::UnreachableCodeReached => TrapKind::Unreachable,
        _ => TrapKind::Other,
    }
}

/// Explains why a guest call failed, in words for the instance's status
/// (and counts it on `metrics` when it was a trap).
fn fault(
    store: &wasmtime::Store<GuestState>,
    error: &wasmtime::Error,
    metrics: &Metrics,
) -> String {
    if let Some(trap) = error.downcast_ref::<Trap>() {
        metrics.guest_trapped(trap_kind(trap));
    }
    let state = store.data();
    if let Some(nondeterminism) = error.downcast_ref::<Nondeterminism>() {
        return nondeterminism.to_string();
    }
    let printed = state.printed();
    let reason = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            "the guest ran past its time limit without waiting (stopped by epoch interruption)"
                .to_string()
        }
        Some(Trap::UnreachableCodeReached) if !printed.is_empty() => {
            "the guest panicked".to_string()
        }
        Some(trap) => format!("the guest trapped: {trap}"),
        None => state.settings.redact(&format!("{:#}", error.root_cause())),
    };
    if printed.is_empty() {
        reason
    } else {
        format!("{reason}: {printed}")
    }
}

/// Writes a compiled component into the compile cache: whole or not at
/// all (written aside, then renamed), so a host reading it never sees half.
/// A failure only costs the next deploy a compilation.
fn keep_compiled(path: &std::path::Path, compiled: &[u8]) {
    let aside = path.with_extension(format!("{}.part", std::process::id()));
    let kept = std::fs::create_dir_all(path.parent().unwrap_or(path))
        .and_then(|()| std::fs::write(&aside, compiled))
        .and_then(|()| std::fs::rename(&aside, path));
    if let Err(error) = kept {
        let _ = std::fs::remove_file(&aside);
        tracing::warn!(path = %path.display(), %error, "cannot keep a compiled component in the compile cache");
    }
}
