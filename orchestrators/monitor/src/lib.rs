//! The monitor pattern: an eternal orchestration that polls an endpoint on a
//! durable timer. Each round continues as new, so history stays bounded no
//! matter how long it watches.

use std::time::Duration;

use durango_sdk::{DurableHttpRequest, Error, OrchestrationContext};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Watch {
    /// Polled with GET; the watch ends when it answers `{"status": "done"}`.
    url: String,
    interval_seconds: u64,
    /// Give up after this many checks.
    max_checks: u32,
    #[serde(default)]
    checks: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    done: bool,
    checks: u32,
    last_status: u16,
}

async fn job_monitor(ctx: OrchestrationContext, watch: Watch) -> Result<Report, Error> {
    let response = ctx.call_http(DurableHttpRequest::get(&watch.url)).await?;
    let checks = watch.checks + 1;
    let done = serde_json::from_str::<serde_json::Value>(&response.content)
        .is_ok_and(|body| body["status"] == "done");
    ctx.set_custom_status(
        serde_json::json!({"checks": checks, "lastStatus": response.status_code}),
    );
    if done || checks >= watch.max_checks {
        return Ok(Report {
            done,
            checks,
            last_status: response.status_code,
        });
    }
    ctx.sleep(Duration::from_secs(watch.interval_seconds)).await;
    ctx.continue_as_new(Watch { checks, ..watch })
}

durango_sdk::app! {
    orchestrator "JobMonitor" => job_monitor;
}
