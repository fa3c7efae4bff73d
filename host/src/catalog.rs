//! The deployed apps as the database holds them: which app version serves
//! each orchestrator, and loading a stored version into the runtime when
//! an instance or activity pinned to it runs here first. Every host on a
//! database reads the same rows, so a version deployed through one host
//! runs on all.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::runtime::{FunctionInfo, GuestFault, Runtime};
use crate::store::{Apps, StoreError};

pub struct Catalog {
    apps: Arc<dyn Apps>,
    runtime: Arc<Runtime>,
    /// Orchestrator name → (app, the app's current version).
    orchestrators: RwLock<HashMap<String, (String, String)>>,
}

impl Catalog {
    pub fn new(apps: Arc<dyn Apps>, runtime: Arc<Runtime>) -> Catalog {
        Catalog {
            apps,
            runtime,
            orchestrators: RwLock::default(),
        }
    }

    /// Reads every app's current version again.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let mut orchestrators = HashMap::new();
        for (app, version, functions) in self.apps.current_apps().await? {
            let functions: Vec<FunctionInfo> = serde_json::from_str(&functions)
                .map_err(|e| StoreError::Corrupt(format!("function list of {app}: {e}")))?;
            for f in functions.into_iter().filter(|f| f.kind == "orchestrator") {
                orchestrators.insert(f.name, (app.clone(), version.clone()));
            }
        }
        *self.orchestrators.write().expect("catalog") = orchestrators;
        Ok(())
    }

    /// The current app version that serves `orchestrator`.
    pub fn version_of(&self, orchestrator: &str) -> Option<String> {
        self.read().get(orchestrator).map(|(_, v)| v.clone())
    }

    /// The app that serves `orchestrator`.
    pub fn app_of(&self, orchestrator: &str) -> Option<String> {
        self.read().get(orchestrator).map(|(app, _)| app.clone())
    }

    /// The names of the orchestrators that can be started, sorted.
    pub fn orchestrators(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        names
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, (String, String)>> {
        self.orchestrators.read().expect("catalog")
    }

    /// Forgets a version that was removed from the database: the runtime
    /// drops its compiled code and idle guests. Only this host's memory:
    /// other hosts sharing a PostgreSQL database keep it loaded until they
    /// restart, which is harmless, since a version is removed only once no
    /// instance uses it (and it is no app's current one, so nothing new
    /// starts on it).
    pub fn forget(&self, version: &str) {
        self.runtime.unload(version);
    }

    /// Makes a stored app version ready to run; a fault if it cannot be.
    pub async fn ensure_loaded(&self, version: &str) -> Result<Result<(), GuestFault>, StoreError> {
        if self.runtime.is_loaded(version) {
            return Ok(Ok(()));
        }
        let Some(stored) = self.apps.app_version(version.to_string()).await? else {
            return Ok(Err(GuestFault(format!(
                "app version {version} is not in the database"
            ))));
        };
        let allowed = stored
            .allowed_settings
            .map(|names| Arc::new(names.into_iter().collect()));
        let recompiled = match self
            .runtime
            .load(version, &stored.compiled, &stored.wasm, allowed)
            .await
        {
            Ok(recompiled) => recompiled,
            Err(e) => {
                return Ok(Err(GuestFault(format!(
                    "app version {version} cannot be loaded: {e:#}"
                ))))
            }
        };
        if let Some(compiled) = recompiled {
            tracing::info!(
                version,
                "compiled again: this host's engine cannot load the stored compiled code (another wasmtime or other engine settings); it is stored in its place"
            );
            if let Err(error) = self
                .apps
                .store_compiled(version.to_string(), compiled)
                .await
            {
                // It runs anyway; the next start compiles it again.
                tracing::warn!(%error, version, "the new compiled code could not be stored");
            }
        }
        Ok(Ok(()))
    }
}
