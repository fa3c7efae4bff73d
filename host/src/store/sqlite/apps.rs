//! Deployed app versions and the stored secrets.

use rusqlite::{params, OptionalExtension};

use super::reads::decode;
use super::writes::exec;
use super::SqliteStore;
use crate::store::{now_ms, Apps, Deployment, StoreFuture, StoredVersion};

impl Apps for SqliteStore {
    fn deploy(&self, d: Deployment) -> StoreFuture<()> {
        self.write(move |conn| {
            let now = now_ms();
            let allowed = d
                .allowed_settings
                .as_ref()
                .map(|names| serde_json::to_string(&names).expect("names serialize"));
            exec(
                conn,
                "INSERT INTO app_versions
                   (version, app, wasm, compiled, functions, allowed_settings, deployed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(version) DO UPDATE SET compiled = excluded.compiled,
                                                    allowed_settings = excluded.allowed_settings",
                params![
                    d.version,
                    d.app,
                    d.wasm,
                    d.compiled,
                    d.functions,
                    allowed,
                    now
                ],
            )?;
            exec(
                conn,
                "INSERT INTO apps (name, version, deployed_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET version = excluded.version,
                                                 deployed_at = excluded.deployed_at",
                params![d.app, d.version, now],
            )?;
            Ok(())
        })
    }

    fn app_version(&self, version: String) -> StoreFuture<Option<StoredVersion>> {
        self.read(move |conn| {
            let row: Option<(Vec<u8>, Vec<u8>, Option<String>)> = conn
                .query_row(
                    "SELECT compiled, wasm, allowed_settings FROM app_versions WHERE version = ?1",
                    [version],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            row.map(|(compiled, wasm, allowed)| {
                Ok(StoredVersion {
                    compiled,
                    wasm,
                    allowed_settings: allowed
                        .map(|json| decode("allowed settings", &json))
                        .transpose()?,
                })
            })
            .transpose()
        })
    }

    fn current_apps(&self) -> StoreFuture<Vec<(String, String, String)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT apps.name, apps.version, v.functions
                   FROM apps JOIN app_versions v ON v.version = apps.version ORDER BY apps.name",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn meta_secret(&self, name: &'static str, candidate: String) -> StoreFuture<String> {
        self.write(move |conn| {
            exec(
                conn,
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                params![name, candidate],
            )?;
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [name], |r| {
                r.get(0)
            })
        })
    }
}
