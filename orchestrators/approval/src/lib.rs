//! Approvals that wait on people: a multi-step chain where each level must
//! approve before a deadline (a timeout escalates to the next level), and an
//! M-of-N quorum asked in parallel. The decision trail is the custom status,
//! readable over the status API while the flow runs.

use std::time::Duration;

use durango_sdk::http::Request;
use durango_sdk::{ActivityContext, Error, OrchestrationContext, TaskHandle};
use serde::{Deserialize, Serialize};
use serde_json::json;

const DEFAULT_TIMEOUT_SECONDS: u64 = 24 * 3600;
const EVENT: &str = "ApprovalEvent";

#[derive(Deserialize, Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct ApprovalRequest {
    request_id: String,
    amount: f64,
    approvers: Vec<String>,
    /// Per level (chain) or overall (quorum); else the setting
    /// `ApprovalTimeoutSeconds`, else a day.
    timeout_seconds: Option<u64>,
    /// Quorum only: how many approvals decide (default: all).
    required: Option<usize>,
}

/// What an approver sends as `ApprovalEvent`.
#[derive(Deserialize, Clone)]
struct Decision {
    approved: bool,
    approver: String,
    #[serde(default)]
    comment: Option<String>,
}

/// One line of the decision trail.
#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Step {
    level: usize,
    approver: String,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    request_id: String,
    /// approved, rejected or expired
    decision: &'static str,
    trail: Vec<Step>,
}

fn timeout(ctx: &OrchestrationContext, request: &ApprovalRequest) -> Result<Duration, Error> {
    let seconds = match request.timeout_seconds {
        Some(seconds) => seconds,
        None => ctx
            .setting_as("ApprovalTimeoutSeconds")?
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS),
    };
    Ok(Duration::from_secs(seconds))
}

/// Each approver in turn must approve before the deadline. A rejection ends
/// the flow; a timeout escalates to the next level. Approved by the last
/// level reached, the request is processed.
async fn approval_workflow(
    ctx: OrchestrationContext,
    request: ApprovalRequest,
) -> Result<Outcome, Error> {
    if request.approvers.is_empty() {
        return Err(Error::msg("an approval needs at least one approver"));
    }
    let deadline = timeout(&ctx, &request)?;
    let mut trail: Vec<Step> = Vec::new();
    let mut decision = "expired";
    for (level, approver) in request.approvers.iter().enumerate() {
        let ask = json!({"request": request, "approver": approver, "level": level + 1});
        // Shown before the ask goes out, so the answer that moved the request
        // here (raised with `?timeout=`) already reads who decides next.
        ctx.set_custom_status(json!({"waitingFor": approver, "level": level + 1, "trail": trail}));
        let _: () = ctx.call_activity("RequestApproval", &ask).await?;
        let timer = ctx.sleep(deadline);
        let answer = loop {
            let reply = ctx.wait_for_event::<Decision>(EVENT);
            if ctx.when_any(&[&reply, &timer]).await != 0 {
                break None;
            }
            match reply.await {
                // Only the approver asked at this level decides it.
                Ok(d) if d.approver == *approver => break Some(d),
                _ => continue,
            }
        };
        if !timer.is_completed() {
            timer.cancel();
        }
        match answer {
            None => {
                trail.push(step(level, approver, "timed out", None));
                if let Some(next) = request.approvers.get(level + 1) {
                    let escalation = json!({"request": request, "from": approver, "to": next, "level": level + 2});
                    let _: () = ctx.call_activity("Escalate", &escalation).await?;
                }
                decision = "expired";
            }
            Some(d) if d.approved => {
                trail.push(step(level, approver, "approved", d.comment));
                decision = "approved";
            }
            Some(d) => {
                trail.push(step(level, approver, "rejected", d.comment));
                decision = "rejected";
                break;
            }
        }
    }
    finish(&ctx, request, decision, trail).await
}

/// All approvers are asked at once; `required` approvals decide. It is
/// rejected as soon as the quorum can no longer be reached, and expires at
/// the deadline.
async fn quorum_approval(
    ctx: OrchestrationContext,
    request: ApprovalRequest,
) -> Result<Outcome, Error> {
    let total = request.approvers.len();
    let required = request.required.unwrap_or(total);
    if required == 0 || required > total {
        return Err(Error::msg(format!("required must be 1 to {total}")));
    }
    let asks = request
        .approvers
        .iter()
        .enumerate()
        .map(|(level, approver)| {
            let ask = json!({"request": request, "approver": approver, "level": level + 1});
            ctx.call_activity::<()>("RequestApproval", ask)
        })
        .collect();
    for sent in ctx.when_all(asks).await {
        sent?;
    }
    let timer = ctx.sleep(timeout(&ctx, &request)?);
    let mut trail: Vec<Step> = Vec::new();
    let decision = loop {
        let approvals = trail.iter().filter(|s| s.outcome == "approved").count();
        let rejections = trail.iter().filter(|s| s.outcome == "rejected").count();
        if approvals >= required {
            break "approved";
        }
        if total - rejections < required {
            break "rejected";
        }
        ctx.set_custom_status(
            json!({"approvals": approvals, "required": required, "trail": trail}),
        );
        let reply = ctx.wait_for_event::<Decision>(EVENT);
        if ctx.when_any(&[&reply, &timer]).await != 0 {
            break "expired";
        }
        let Ok(d) = reply.await else { continue };
        let Some(level) = request.approvers.iter().position(|a| *a == d.approver) else {
            continue; // not one of the approvers
        };
        if trail.iter().any(|s| s.approver == d.approver) {
            continue; // each approver counts once
        }
        let outcome = if d.approved { "approved" } else { "rejected" };
        trail.push(step(level, &d.approver, outcome, d.comment));
    };
    if !timer.is_completed() {
        timer.cancel();
    }
    finish(&ctx, request, decision, trail).await
}

fn step(level: usize, approver: &str, outcome: &'static str, comment: Option<String>) -> Step {
    Step {
        level: level + 1,
        approver: approver.to_string(),
        outcome,
        comment,
    }
}

async fn finish(
    ctx: &OrchestrationContext,
    request: ApprovalRequest,
    decision: &'static str,
    trail: Vec<Step>,
) -> Result<Outcome, Error> {
    ctx.set_custom_status(json!({"decision": decision, "trail": trail}));
    if decision == "approved" {
        let _: () = ctx.call_activity("ProcessApproval", &request).await?;
    }
    Ok(Outcome {
        request_id: request.request_id,
        decision,
        trail,
    })
}

/// POSTs `message` to the approval webhook (setting `ApprovalWebhookUrl`).
fn post(ctx: &ActivityContext, message: serde_json::Value) -> Result<(), Error> {
    let url = ctx.required_setting("ApprovalWebhookUrl")?;
    let response = Request::post(&url)
        .header("Idempotency-Key", &ctx.idempotency_key)
        .json(&message)?
        .send()?;
    if !response.is_success() {
        return Err(Error::msg(format!(
            "the approval webhook answered {}: {}",
            response.status,
            response.text()
        )));
    }
    Ok(())
}

/// Asks one approver, with a link that raises `ApprovalEvent` on this
/// instance (and can do nothing else).
fn request_approval(ctx: &ActivityContext, ask: serde_json::Value) -> Result<(), Error> {
    post(
        ctx,
        json!({
            "kind": "approvalRequested",
            "instanceId": ctx.instance_id,
            "requestId": ask["request"]["requestId"],
            "amount": ask["request"]["amount"],
            "approver": ask["approver"],
            "level": ask["level"],
            "respondUrl": ctx.send_event_url(EVENT),
            "statusUrl": ctx.status_url,
        }),
    )
}

fn escalate(ctx: &ActivityContext, escalation: serde_json::Value) -> Result<(), Error> {
    post(
        ctx,
        json!({
            "kind": "escalated",
            "instanceId": ctx.instance_id,
            "requestId": escalation["request"]["requestId"],
            "from": escalation["from"],
            "to": escalation["to"],
            "level": escalation["level"],
        }),
    )
}

fn process_approval(ctx: &ActivityContext, request: ApprovalRequest) -> Result<(), Error> {
    post(
        ctx,
        json!({
            "kind": "processed",
            "instanceId": ctx.instance_id,
            "requestId": request.request_id,
            "amount": request.amount,
        }),
    )
}

durango_sdk::app! {
    orchestrator "ApprovalWorkflow" => approval_workflow;
    orchestrator "QuorumApproval" => quorum_approval;
    activity "RequestApproval" => request_approval;
    activity "Escalate" => escalate;
    activity "ProcessApproval" => process_approval;
}
