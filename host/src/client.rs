//! The CLI's client commands: each is one HTTP call to a running host.

use std::path::Path;

use crate::check::divergence_words;
use crate::host::Upgrade;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::Value;

use crate::paths::PREFIX;

#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The host's base URL.
    #[arg(
        long,
        env = "DURANGO_URL",
        default_value = "http://127.0.0.1:7071",
        global = true
    )]
    pub url: String,
    /// The system key (printed by `durango serve`).
    #[arg(long, env = "DURANGO_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
    key: String,
}

/// A response's status and JSON body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let key = args.key.clone().ok_or_else(|| {
            anyhow!("no key: pass --key or set DURANGO_KEY (durango serve prints it)")
        })?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Client {
            agent,
            base: args.url.trim_end_matches('/').to_string(),
            key,
        })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let sent = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("x-functions-key", &self.key)
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("x-functions-key", &self.key)
                .call(),
            (_, body) => {
                let request = match method {
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                };
                let request = request.header("x-functions-key", &self.key);
                match body {
                    Some((content_type, bytes)) => {
                        request.content_type(content_type).send(&bytes[..])
                    }
                    None => request.send_empty(),
                }
            }
        };
        let response = sent.with_context(|| format!("cannot reach {}", self.base))?;
        Ok(read_answer(response)?.0)
    }

    /// Deploys a component; `allow` limits the settings it may read.
    pub fn deploy(
        &self,
        file: &Path,
        name: Option<&str>,
        allow: &[String],
        upgrade: Upgrade,
    ) -> anyhow::Result<Answer> {
        let (app, wasm) = component(file, name)?;
        let upgrade = match upgrade {
            Upgrade::None => "none",
            Upgrade::Compatible => "compatible",
        };
        let query: String = allow
            .iter()
            .map(|name| format!("allowSetting={}", crate::paths::encode(name)))
            .chain([format!("upgrade={upgrade}")])
            .collect::<Vec<_>>()
            .join("&");
        self.call(
            "PUT",
            &format!("/admin/apps/{}?{query}", crate::paths::encode(&app)),
            Some(("application/wasm", wasm)),
        )
    }

    /// Checks, without deploying it, how the app's unfinished instances
    /// would replay on the component in `file`.
    pub fn check(&self, file: &Path, name: Option<&str>) -> anyhow::Result<Answer> {
        let (app, wasm) = component(file, name)?;
        self.call(
            "POST",
            &format!("/admin/apps/{}/check", crate::paths::encode(&app)),
            Some(("application/wasm", wasm)),
        )
    }

    /// Moves an instance to the version that serves its orchestrator now.
    pub fn upgrade(&self, id: &str) -> anyhow::Result<Answer> {
        self.call(
            "POST",
            &format!("/admin/instances/{}/upgrade", crate::paths::encode(id)),
            None,
        )
    }

    /// An app's stored versions, newest first.
    pub fn versions(&self, app: &str) -> anyhow::Result<Answer> {
        self.call(
            "GET",
            &format!("/admin/apps/{}/versions", crate::paths::encode(app)),
            None,
        )
    }

    /// Removes the app's version whose digest starts with `version`.
    pub fn remove_version(&self, app: &str, version: &str) -> anyhow::Result<Answer> {
        self.call(
            "DELETE",
            &format!(
                "/admin/apps/{}/versions/{}",
                crate::paths::encode(app),
                crate::paths::encode(version)
            ),
            None,
        )
    }

    pub fn start(
        &self,
        orchestrator: &str,
        input: Option<&str>,
        id: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let mut path = format!(
            "{PREFIX}/orchestrators/{}",
            crate::paths::encode(orchestrator)
        );
        if let Some(id) = id {
            path = format!("{path}/{}", crate::paths::encode(id));
        }
        let body = json_argument(input, "--input")?;
        self.call("POST", &path, Some(("application/json", body)))
    }

    /// Raises an event; with `wait` (seconds), answers with the instance's
    /// status once the episode that consumed it has committed.
    pub fn raise(
        &self,
        id: &str,
        event: &str,
        data: Option<&str>,
        wait: Option<f64>,
    ) -> anyhow::Result<Answer> {
        let mut path = format!(
            "{PREFIX}/instances/{}/raiseEvent/{}",
            crate::paths::encode(id),
            crate::paths::encode(event)
        );
        if let Some(seconds) = wait {
            path = format!("{path}?timeout={seconds}");
        }
        let body = json_argument(data, "the event data")?;
        self.call("POST", &path, Some(("application/json", body)))
    }

    pub fn status(&self, id: &str, history: bool) -> anyhow::Result<Answer> {
        let query = if history {
            "?showHistory=true&showHistoryOutput=true"
        } else {
            ""
        };
        self.call(
            "GET",
            &format!("{PREFIX}/instances/{}{query}", crate::paths::encode(id)),
            None,
        )
    }

    pub fn terminate(&self, id: &str, reason: Option<&str>) -> anyhow::Result<Answer> {
        let reason = crate::paths::encode(reason.unwrap_or(""));
        let path = format!(
            "{PREFIX}/instances/{}/terminate?reason={reason}",
            crate::paths::encode(id)
        );
        self.call("POST", &path, None)
    }

    /// Lists instances; `filters` are query parameters (`runtimeStatus`,
    /// `createdTimeFrom`, `createdTimeTo`, `instanceIdPrefix`, `top`). Follows
    /// continuation tokens unless `top` caps the count.
    pub fn list(&self, filters: &[(&str, String)]) -> anyhow::Result<Answer> {
        let url = format!("{}{PREFIX}/instances?{}", self.base, query(filters));
        let capped = filters.iter().any(|(k, _)| *k == "top");
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut request = self.agent.get(&url).header("x-functions-key", &self.key);
            if let Some(token) = &token {
                request = request.header("x-ms-continuation-token", token);
            }
            let response = request
                .call()
                .with_context(|| format!("cannot reach {}", self.base))?;
            let (page, next) = read_answer(response)?;
            all.extend(page.body.as_array().cloned().unwrap_or_default());
            match next {
                Some(next) if !capped => token = Some(next),
                _ => break,
            }
        }
        Ok(Answer {
            status: 200,
            body: Value::Array(all),
        })
    }

    /// `suspend`, `resume`, `rewind` or `restart` an instance.
    pub fn control(
        &self,
        id: &str,
        operation: &str,
        reason: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let reason = crate::paths::encode(reason.unwrap_or(""));
        let path = format!(
            "{PREFIX}/instances/{}/{operation}?reason={reason}",
            crate::paths::encode(id)
        );
        self.call("POST", &path, None)
    }

    pub fn restart(&self, id: &str, same_id: bool) -> anyhow::Result<Answer> {
        let path = format!(
            "{PREFIX}/instances/{}/restart?restartWithNewInstanceId={}",
            crate::paths::encode(id),
            !same_id
        );
        self.call("POST", &path, None)
    }

    /// Purges one instance, or (with no id) the finished ones in a time range.
    pub fn purge(&self, id: Option<&str>, filters: &[(&str, String)]) -> anyhow::Result<Answer> {
        let path = match id {
            Some(id) => format!("{PREFIX}/instances/{}", crate::paths::encode(id)),
            None => format!("{PREFIX}/instances?{}", query(filters)),
        };
        self.call("DELETE", &path, None)
    }
}

/// `k=v&…` with the values encoded.
fn query(filters: &[(&str, String)]) -> String {
    filters
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::paths::encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The status and JSON body of a response, and its continuation token; an
/// error status becomes an error with the host's message.
fn read_answer(
    mut response: ureq::http::Response<ureq::Body>,
) -> anyhow::Result<(Answer, Option<String>)> {
    let status = response.status().as_u16();
    let next = response
        .headers()
        .get("x-ms-continuation-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .context("cannot read the response")?;
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if status >= 400 {
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        bail!("{status}: {message}");
    }
    Ok((Answer { status, body }, next))
}

/// A JSON argument: checked here so a typo gets a clear message.
fn json_argument(text: Option<&str>, what: &str) -> anyhow::Result<Vec<u8>> {
    match text {
        None => Ok(Vec::new()),
        Some(text) => {
            let value: Value = serde_json::from_str(text).map_err(|e| {
                anyhow!("{what} is not valid JSON ({e}); quote strings, e.g. '\"+14255550123\"'")
            })?;
            Ok(value.to_string().into_bytes())
        }
    }
}

/// The status with its history as a timeline, one event a line.
pub fn timeline(status: &Value) -> String {
    let mut lines = Vec::new();
    for event in status["historyEvents"].as_array().into_iter().flatten() {
        let kind = event["EventType"].as_str().unwrap_or("?");
        let time = event["Timestamp"].as_str().unwrap_or("");
        let detail = [
            "FunctionName",
            "Name",
            "Sender",
            "FireAt",
            "OrchestrationStatus",
        ]
        .iter()
        .filter_map(|k| event[*k].as_str().map(|v| format!("{k}={v}")))
        .chain(["Result", "Input", "Reason"].iter().filter_map(|k| {
            let v = &event[*k];
            (!v.is_null()).then(|| format!("{k}={v}"))
        }))
        .collect::<Vec<_>>()
        .join(" ");
        lines.push(format!("{time}  {kind:<20} {detail}"));
    }
    lines.join("\n")
}

/// The app name (`name`, or the file's stem) and the component's bytes.
fn component(file: &Path, name: Option<&str>) -> anyhow::Result<(String, Vec<u8>)> {
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let app = match name {
        Some(name) => name.to_string(),
        None => file
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| anyhow!("{} has no usable file name; pass --name", file.display()))?
            .to_string(),
    };
    Ok((app, wasm))
}

/// A deploy check as lines: each instance's verdict, then the counts.
pub fn check_lines(report: &Value) -> String {
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_string();
    let mut lines = String::new();
    for instance in report["instances"].as_array().into_iter().flatten() {
        let verdict = if instance["compatible"].as_bool() == Some(true) {
            "compatible".to_string()
        } else if let Some(step) = instance["step"].as_u64() {
            let words = divergence_words(step, &text(instance, "history"), &text(instance, "code"));
            format!("diverges {words}")
        } else {
            format!("diverges: {}", text(instance, "reason"))
        };
        lines += &format!(
            "{}  {}  {verdict}\n",
            text(instance, "instanceId"),
            text(instance, "name")
        );
    }
    lines += &format!(
        "{} unfinished: {} compatible, {} diverging with version {}\n",
        report["unfinished"],
        report["compatible"],
        report["diverging"],
        text(report, "version")
    );
    lines
}

/// The versions answer, one version a line:
/// `DIGEST  DEPLOYED  N unfinished[ (current)]`.
pub fn version_lines(versions: &Value) -> String {
    versions
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            format!(
                "{}  {}  {} unfinished{}",
                v["version"].as_str().unwrap_or("?"),
                v["deployedTime"].as_str().unwrap_or("?"),
                v["unfinished"].as_u64().unwrap_or(0),
                if v["current"] == true {
                    " (current)"
                } else {
                    ""
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A deploy answer's `pinned`, one line each: the orchestrators the new
/// version lacks, whose unfinished instances stay on their version.
pub fn pinned_lines(deployed: &Value) -> Vec<String> {
    deployed["pinned"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let n = p["unfinished"].as_u64().unwrap_or(0);
            format!(
                "{} is not in the new version: its {n} unfinished instance{} stay{} on version {}",
                p["orchestrator"].as_str().unwrap_or("?"),
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
                p["version"].as_str().unwrap_or("?"),
            )
        })
        .collect()
}
