//! Whether a new version of an app could take over its unfinished
//! instances: each one's stored history replayed on the new code, in
//! parallel, with the same step check an episode makes, and nothing
//! written. An instance is compatible when the new code takes every step
//! history holds, in order, and is still waiting where history has it
//! waiting; otherwise it diverges, at the step and in the words of the
//! check that refused it.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::engine::episode::replay_history;
use crate::engine::replay::Replay;
use crate::runtime::Runtime;
use crate::store::{InstanceRow, Store};

/// The check of every unfinished instance of an app against one version.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub app: String,
    /// The version checked (the new component's digest).
    pub version: String,
    pub unfinished: usize,
    pub compatible: usize,
    pub diverging: usize,
    /// Every instance, oldest first.
    pub instances: Vec<InstanceCheck>,
}

/// One instance's verdict.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCheck {
    pub instance_id: String,
    pub name: String,
    /// The version the instance is pinned to now.
    pub version: String,
    pub compatible: bool,
    /// The step where the new code first took another step than history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// That step as history holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
    /// What the new code asked for instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why it diverges, in the words of the check that refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What was replayed: the instance's pk and `episodes` as read, and
    /// the length of the history replayed (a move is made only from there).
    #[serde(skip)]
    pub replayed: Option<Replayed>,
}

#[derive(Debug, Clone, Copy)]
pub struct Replayed {
    pub pk: i64,
    pub episodes: i64,
    pub history_len: usize,
}

impl InstanceCheck {
    fn compatible(row: &InstanceRow) -> InstanceCheck {
        InstanceCheck {
            instance_id: row.id.clone(),
            name: row.name.clone(),
            version: row.version.clone(),
            compatible: true,
            step: None,
            history: None,
            code: None,
            reason: None,
            replayed: None,
        }
    }

    fn diverges(mut self, reason: String) -> InstanceCheck {
        self.compatible = false;
        self.reason = Some(reason);
        self
    }
}

/// Replays `instances` on `version` (loaded in `runtime`, with these
/// `orchestrators`), at most as many at once as the machine has cores
/// (twice: a replay also waits on the store).
pub async fn replay_on(
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    version: String,
    orchestrators: HashSet<String>,
    instances: Vec<InstanceRow>,
) -> Vec<InstanceCheck> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let permits = Arc::new(Semaphore::new(2 * cores));
    let (version, orchestrators) = (Arc::new(version), Arc::new(orchestrators));
    let mut checks = JoinSet::new();
    for (n, row) in instances.into_iter().enumerate() {
        let (runtime, store) = (runtime.clone(), store.clone());
        let (version, orchestrators) = (version.clone(), orchestrators.clone());
        let permits = permits.clone();
        checks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (
                n,
                check_one(&runtime, &*store, &version, &orchestrators, row).await,
            )
        });
    }
    let mut verdicts = Vec::new();
    while let Some(done) = checks.join_next().await {
        match done {
            Ok(verdict) => verdicts.push(verdict),
            // A check that panicked says nothing of the others.
            Err(error) => tracing::error!(%error, "an instance's check stopped"),
        }
    }
    verdicts.sort_by_key(|(n, _)| *n);
    verdicts.into_iter().map(|(_, verdict)| verdict).collect()
}

async fn check_one(
    runtime: &Runtime,
    store: &dyn Store,
    version: &str,
    orchestrators: &HashSet<String>,
    row: InstanceRow,
) -> InstanceCheck {
    let verdict = InstanceCheck::compatible(&row);
    if row.version == version {
        return verdict;
    }
    if !orchestrators.contains(&row.name) {
        return verdict.diverges(format!("the new version has no orchestrator {}", row.name));
    }
    let history = match store.history(row.id.clone()).await {
        Ok(history) => history,
        Err(error) => return verdict.diverges(format!("its history cannot be read: {error}")),
    };
    let replay = Replay::new(&row.id, &history).pinned_to(&row.version);
    let mut guest = match runtime.orchestrator(version, replay).await {
        Ok(guest) => guest,
        Err(fault) => return verdict.diverges(fault.0),
    };
    let replayed = Replayed {
        pk: row.pk,
        episodes: row.episodes,
        history_len: history.len(),
    };
    match replay_history(&mut guest, history).await {
        Ok(()) => match guest.replay().steps_not_taken() {
            0 => InstanceCheck {
                replayed: Some(replayed),
                ..verdict
            },
            left => verdict.diverges(format!(
                "non-deterministic orchestrator: the new code waits where history has {left} more step(s)"
            )),
        },
        Err(fault) => {
            let divergence = guest.replay().divergence().cloned();
            let mut verdict = verdict.diverges(fault.0);
            if let Some(d) = divergence {
                verdict.step = Some(d.step);
                verdict.history = Some(d.history);
                verdict.code = Some(d.code);
            }
            verdict
        }
    }
}

/// Where an instance diverges, in words: `at step N: history has …, the
/// new code asked for …`.
pub fn divergence_words(step: u64, history: &str, code: &str) -> String {
    format!("at step {step}: history has {history}, the new code asked for {code}")
}

/// The report for `app`'s instances checked against `version`.
pub fn report(app: &str, version: &str, instances: Vec<InstanceCheck>) -> CheckReport {
    let compatible = instances.iter().filter(|c| c.compatible).count();
    CheckReport {
        app: app.to_string(),
        version: version.to_string(),
        unfinished: instances.len(),
        compatible,
        diverging: instances.len() - compatible,
        instances,
    }
}
