//! Admin routes: deploy a component, list the deployed apps, list an app's
//! versions and remove one that no instance uses.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::body::bytes;
use super::{ApiError, ApiState};
use crate::host::{DeployError, MoveRefused, Upgrade};
use crate::store::{format_time, VersionRemoval};

const MAX_APP_NAME: usize = 64;

pub fn validate_app_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_APP_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "an app name has 1 to {MAX_APP_NAME} characters: letters, digits, '-', '_' or '.'"
        ))
    }
}

/// `?allowSetting=A&allowSetting=B` (or `allowSettings=A,B`): the settings
/// the app may read. Without it, it may read all.
fn allowed_settings(uri: &Uri) -> Option<Vec<String>> {
    let query = uri.query()?;
    let names: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "allowSetting" || k == "allowSettings")
        .flat_map(|(_, v)| {
            v.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    (!names.is_empty()).then_some(names)
}

/// `?upgrade=none|compatible` (default none).
fn upgrade(uri: &Uri) -> Result<Upgrade, ApiError> {
    let asked = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "upgrade")
        .map(|(_, v)| v.into_owned());
    match asked.as_deref() {
        None | Some("none") => Ok(Upgrade::None),
        Some("compatible") => Ok(Upgrade::Compatible),
        Some(other) => Err(ApiError::bad_request(format!(
            "upgrade is none or compatible, not {other:?}"
        ))),
    }
}

pub async fn deploy(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let wasm = component(&app, body)?;
    let upgrade = upgrade(&uri)?;
    let deployed = state
        .host
        .deploy_and_upgrade(&app, &wasm, allowed_settings(&uri), upgrade)
        .await?;
    Ok((StatusCode::CREATED, Json(deployed)).into_response())
}

/// The component a deploy or a check sends for `app`.
fn component(app: &str, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    validate_app_name(app).map_err(ApiError::bad_request)?;
    let wasm = bytes(body)?;
    if wasm.is_empty() {
        return Err(ApiError::bad_request("the body must be a .wasm component"));
    }
    Ok(wasm)
}

impl From<DeployError> for ApiError {
    fn from(error: DeployError) -> ApiError {
        match error {
            DeployError::Invalid(reason) => ApiError::bad_request(reason),
            DeployError::Store(error) => error.into(),
        }
    }
}

/// `POST /admin/apps/{app}/check`: the deploy's check, writing nothing.
pub async fn check(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let wasm = component(&app, body)?;
    let report = state.host.check_deploy(&app, &wasm).await?;
    Ok(Json(report).into_response())
}

/// `POST /admin/instances/{id}/upgrade`: the instance moves to the version
/// that serves its orchestrator now, if its history replays there.
pub async fn upgrade_instance(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let conflict = |message: String| ApiError::new(StatusCode::CONFLICT, message);
    match state.host.upgrade_instance(&id).await? {
        Ok((from, to)) => Ok(Json(serde_json::json!({
            "instanceId": id,
            "from": from,
            "to": to,
        }))
        .into_response()),
        Err(MoveRefused::NotFound) => Err(ApiError::not_found(format!("no instance {id}"))),
        Err(MoveRefused::Finished(status)) => Err(conflict(format!(
            "instance {id} is {}: only unfinished instances move",
            status.as_str()
        ))),
        Err(MoveRefused::NotServed(name)) => Err(conflict(format!(
            "no deployed version serves orchestrator {name} now: instance {id} stays on its version"
        ))),
        Err(MoveRefused::Diverges(why)) => Err(conflict(format!(
            "instance {id} diverges on the current version {why}: it stays on its version"
        ))),
        Err(MoveRefused::ChangedMeanwhile) => Err(conflict(format!(
            "instance {id} went on while it was checked: try again"
        ))),
    }
}

pub async fn list(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let apps = state.host.store.current_apps().await?;
    let body: Vec<serde_json::Value> = apps
        .into_iter()
        .map(|(app, version, functions)| {
            serde_json::json!({
                "app": app,
                "version": version,
                "functions": serde_json::from_str::<serde_json::Value>(&functions).unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(body).into_response())
}

/// `GET /admin/apps/{app}/versions`: the app's stored versions, newest
/// first.
pub async fn versions(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    validate_app_name(&app).map_err(ApiError::bad_request)?;
    let Some(versions) = state.host.versions(&app).await? else {
        return Err(ApiError::not_found(format!("no app named {app}")));
    };
    let body: Vec<serde_json::Value> = versions
        .into_iter()
        .map(|v| {
            serde_json::json!({
                "version": v.version,
                "deployedTime": format_time(v.deployed_at),
                "unfinished": v.unfinished,
                "current": v.current,
            })
        })
        .collect();
    Ok(Json(body).into_response())
}

/// A version as a request names it: 4 to 64 lowercase hex digits, the
/// start of a sha256 digest.
fn validate_version_prefix(prefix: &str) -> Result<(), String> {
    let ok = (4..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a version is 4 to 64 lowercase hex digits (a digest or its start), not {prefix:?}"
        ))
    }
}

/// `DELETE /admin/apps/{app}/versions/{version}`: removes the version whose
/// digest starts with `version`, unless it is the current one or in use.
pub async fn remove_version(
    State(state): State<ApiState>,
    Path((app, prefix)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    validate_app_name(&app).map_err(ApiError::bad_request)?;
    validate_version_prefix(&prefix).map_err(ApiError::bad_request)?;
    match state.host.remove_version(&app, &prefix).await? {
        VersionRemoval::Removed(version) => {
            Ok(Json(serde_json::json!({ "app": app, "version": version })).into_response())
        }
        VersionRemoval::NotFound => Err(ApiError::not_found(format!(
            "app {app} has no version starting with {prefix}"
        ))),
        VersionRemoval::Ambiguous(matches) => Err(ApiError::bad_request(format!(
            "{prefix} names more than one version of app {app} ({}); give more of the digest",
            matches.join(", ")
        ))),
        VersionRemoval::Current(version) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "version {version} is the current version of app {app}: deploy another one first"
            ),
        )),
        VersionRemoval::InUse {
            version,
            unfinished,
            failed,
        } => {
            let mut uses = Vec::new();
            if unfinished > 0 {
                uses.push(format!("{unfinished} unfinished"));
            }
            if failed > 0 {
                uses.push(format!(
                    "{failed} failed (a rewind would replay them on it)"
                ));
            }
            Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "version {version} of app {app} is in use by {} instance{}, {}: they must finish, be purged or be moved to another version first",
                    unfinished + failed,
                    if unfinished + failed == 1 { "" } else { "s" },
                    uses.join(" and ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::validate_version_prefix;

    #[test]
    fn a_version_prefix_is_4_to_64_lowercase_hex_digits() {
        assert!(validate_version_prefix("3fa2").is_ok());
        assert!(validate_version_prefix(&"a".repeat(64)).is_ok());
        for bad in ["", "3fa", "3FA2", "3fa2g", "../x", &"a".repeat(65)] {
            assert!(validate_version_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
