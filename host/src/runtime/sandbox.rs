//! The WASI each role sees. An orchestrator's is deterministic: the wall and
//! monotonic clocks read the orchestration's current time, randomness is
//! seeded from the instance id, and there is no environment, file system or
//! network. An activity's has real clocks, and randomness that is the same
//! on every re-run of one call (see `CallRandom`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::rngs::ChaCha20Rng;
use rand::{SeedableRng, TryCryptoRng, TryRng};
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

/// WASI for an activity: real clocks, per-call randomness (`random`);
/// outbound HTTP comes through wasi:http (added by the linker) and settings
/// through the `settings` interface.
pub fn activity_wasi(output: &MemoryOutputPipe, random: &ActivityRandom) -> WasiCtx {
    base_wasi(output)
        .secure_random(random.secure.clone())
        .insecure_random(random.insecure.clone())
        .build()
}

/// The host's key for activity randomness: stored in the database, never
/// shown to a guest. Keyed once; each seed clones it.
pub struct RandomKey(Hmac<sha2::Sha256>);

impl RandomKey {
    pub fn new(secret: &str) -> RandomKey {
        RandomKey(Hmac::new_from_slice(secret.as_bytes()).expect("HMAC takes any key"))
    }

    /// The seed of one call's `label` stream: unguessable without the key,
    /// the same whenever the call (its idempotency key) runs again.
    fn seed(&self, label: &str, idempotency_key: &str) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(idempotency_key.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// An activity guest's `wasi:random` streams. A re-run of a call (after a
/// crash, or a retry) must look like the first run to the outside world:
/// a verification code drawn again must be the code the person already
/// got, since an idempotent provider keeps the first message. So each call
/// draws from ChaCha20 streams keyed by the call's idempotency key under
/// the host's secret, re-keyed as the guest (reused across calls) begins
/// the next call.
#[derive(Clone, Default)]
pub struct ActivityRandom {
    secure: CallRandom,
    insecure: CallRandom,
}

impl ActivityRandom {
    /// Keys the streams for the call with this idempotency key.
    pub fn begin_call(&self, key: &RandomKey, idempotency_key: &str) {
        self.secure.reseed(key.seed("secure", idempotency_key));
        self.insecure.reseed(key.seed("insecure", idempotency_key));
    }
}

/// One stream, shared between the guest's WASI context and the host that
/// re-keys it per call.
#[derive(Clone)]
struct CallRandom(Arc<Mutex<ChaCha20Rng>>);

impl Default for CallRandom {
    /// Until a call begins (the guest starting up, listing its functions),
    /// real randomness.
    fn default() -> Self {
        CallRandom(Arc::new(Mutex::new(ChaCha20Rng::from_seed(rand::random()))))
    }
}

impl CallRandom {
    fn reseed(&self, seed: [u8; 32]) {
        *self.lock() = ChaCha20Rng::from_seed(seed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChaCha20Rng> {
        self.0.lock().expect("activity random")
    }
}

impl TryRng for CallRandom {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.lock().try_next_u32()
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.lock().try_next_u64()
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.lock().try_fill_bytes(dst)
    }
}

impl TryCryptoRng for CallRandom {}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(random: &ActivityRandom) -> u64 {
        random.secure.clone().try_next_u64().unwrap()
    }

    #[test]
    fn a_call_draws_the_same_values_on_every_run_and_other_calls_differ() {
        let key = RandomKey::new("host secret");
        let (first, rerun) = (ActivityRandom::default(), ActivityRandom::default());
        first.begin_call(&key, "i:1");
        rerun.begin_call(&key, "i:1");
        let drawn = [draw(&first), draw(&first)];
        assert_eq!(drawn, [draw(&rerun), draw(&rerun)]);
        assert_ne!(drawn[0], drawn[1]);
        first.begin_call(&key, "i:2");
        assert_ne!(draw(&first), drawn[0], "another call");
        rerun.begin_call(&RandomKey::new("other secret"), "i:1");
        assert_ne!(draw(&rerun), drawn[0], "another host secret");
    }
}
