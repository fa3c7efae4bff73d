//! Deployed app versions and the stored secrets.

use rusqlite::{params, OptionalExtension};

use super::reads::decode;
use super::writes::exec;
use super::SqliteStore;
use crate::store::{
    now_ms, Apps, Deployment, PinnedOrchestrator, StoreFuture, StoredVersion, VersionRemoval,
    VersionRow,
};

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

    fn store_compiled(&self, version: String, compiled: Vec<u8>) -> StoreFuture<()> {
        self.write(move |conn| {
            exec(
                conn,
                "UPDATE app_versions SET compiled = ?1 WHERE version = ?2",
                params![compiled, version],
            )?;
            Ok(())
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

    fn app_versions(&self, app: String) -> StoreFuture<Option<Vec<VersionRow>>> {
        self.read(move |conn| {
            // Unfinished instances are found through `instances_by_status`.
            let mut stmt = conn.prepare_cached(
                "SELECT v.version, v.deployed_at, COALESCE(u.n, 0), a.version IS NOT NULL
                   FROM app_versions v
                   LEFT JOIN (SELECT version, COUNT(*) AS n FROM instances
                               WHERE status IN ('Pending', 'Running', 'Suspended', 'ContinuedAsNew')
                               GROUP BY version) u ON u.version = v.version
                   LEFT JOIN apps a ON a.name = ?1 AND a.version = v.version
                  WHERE v.app = ?1 OR v.version IN (SELECT version FROM apps WHERE name = ?1)
                  ORDER BY v.deployed_at DESC, v.version",
            )?;
            let rows = stmt.query_map([&app], |r| {
                Ok(VersionRow {
                    version: r.get(0)?,
                    deployed_at: r.get(1)?,
                    unfinished: r.get::<_, i64>(2)? as u64,
                    current: r.get(3)?,
                })
            })?;
            let versions: Vec<VersionRow> = rows.collect::<rusqlite::Result<_>>()?;
            // An app always lists its current version: none means no app.
            Ok((!versions.is_empty()).then_some(versions))
        })
    }

    fn remove_version(&self, app: String, prefix: String) -> StoreFuture<VersionRemoval> {
        // A write: the checks and the delete are one transaction, and no
        // other write (an instance starting, a deploy) comes between them.
        self.write(move |conn| {
            let matches: Vec<String> = conn
                .prepare_cached(
                    "SELECT version FROM app_versions
                      WHERE (app = ?1 OR version IN (SELECT version FROM apps WHERE name = ?1))
                        AND substr(version, 1, length(?2)) = ?2
                      ORDER BY version",
                )?
                .query_map(params![app, prefix], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let version = match <[String; 1]>::try_from(matches) {
                Ok([version]) => version,
                Err(matches) if matches.is_empty() => return Ok(VersionRemoval::NotFound),
                Err(matches) => return Ok(VersionRemoval::Ambiguous(matches)),
            };
            let current: bool = conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM apps WHERE version = ?1)",
            )?
            .query_row([&version], |r| r.get(0))?;
            if current {
                return Ok(VersionRemoval::Current(version));
            }
            let (unfinished, failed): (i64, i64) = conn
                .prepare_cached(
                    "SELECT COALESCE(SUM(status <> 'Failed'), 0), COALESCE(SUM(status = 'Failed'), 0)
                       FROM instances
                      WHERE version = ?1
                        AND status IN ('Pending', 'Running', 'Suspended', 'ContinuedAsNew', 'Failed')",
                )?
                .query_row([&version], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if unfinished + failed > 0 {
                return Ok(VersionRemoval::InUse {
                    version,
                    unfinished: unfinished as u64,
                    failed: failed as u64,
                });
            }
            exec(conn, "DELETE FROM app_versions WHERE version = ?1", [&version])?;
            Ok(VersionRemoval::Removed(version))
        })
    }

    fn unfinished_elsewhere(
        &self,
        app: String,
        except: String,
    ) -> StoreFuture<Vec<PinnedOrchestrator>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, version, COUNT(*) FROM instances
                  WHERE status IN ('Pending', 'Running', 'Suspended', 'ContinuedAsNew')
                    AND version <> ?2
                    AND version IN (SELECT version FROM app_versions WHERE app = ?1)
                  GROUP BY name, version
                  ORDER BY name, version",
            )?;
            let rows = stmt.query_map(params![app, except], |r| {
                Ok(PinnedOrchestrator {
                    orchestrator: r.get(0)?,
                    version: r.get(1)?,
                    unfinished: r.get::<_, i64>(2)? as u64,
                })
            })?;
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
