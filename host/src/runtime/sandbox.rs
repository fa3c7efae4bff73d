//! The deterministic WASI an orchestrator sees: the wall and monotonic clocks
//! read the orchestration's current time, randomness is seeded from the
//! instance id, and there is no environment, file system or network.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use sha2::{Digest, Sha256};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

/// The orchestration's current time in milliseconds, shared between the
/// replay engine (which moves it) and the guest's WASI clocks.
#[derive(Clone, Default)]
pub struct OrchestrationClock(Arc<AtomicI64>);

impl OrchestrationClock {
    pub fn set(&self, millis: i64) {
        self.0.store(millis, Ordering::Relaxed);
    }

    fn millis(&self) -> u64 {
        self.0.load(Ordering::Relaxed).max(0) as u64
    }
}

impl HostWallClock for OrchestrationClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.millis())
    }
}

impl HostMonotonicClock for OrchestrationClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.millis().saturating_mul(1_000_000)
    }
}

/// What both roles share: output captured (for failure messages), no
/// environment, no files, no sockets.
fn base_wasi(output: &MemoryOutputPipe) -> WasiCtxBuilder {
    let mut builder = WasiCtx::builder();
    builder
        .stdout(output.clone())
        .stderr(output.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder
}

/// WASI for an orchestrator; `output` collects what the guest prints (a
/// panic message, for instance).
pub fn orchestrator_wasi(
    instance_id: &str,
    clock: &OrchestrationClock,
    output: &MemoryOutputPipe,
) -> WasiCtx {
    let seed: [u8; 32] = Sha256::digest(instance_id.as_bytes()).into();
    let insecure_seed = u128::from_le_bytes(seed[..16].try_into().expect("16 bytes"));
    base_wasi(output)
        .wall_clock(clock.clone())
        .monotonic_clock(clock.clone())
        .secure_random(rand::rngs::StdRng::from_seed(seed))
        .insecure_random(rand::rngs::StdRng::from_seed(seed))
        .insecure_random_seed(insecure_seed)
        .build()
}

/// WASI for an activity: real clocks and randomness; outbound HTTP comes
/// through wasi:http (added by the linker) and settings through the
/// `settings` interface.
pub fn activity_wasi(output: &MemoryOutputPipe) -> WasiCtx {
    base_wasi(output).build()
}
