//! Approvals that wait on people: a multi-step chain where each level must
//! approve before a deadline (a timeout escalates to the next level), and an
//! M-of-N quorum asked in parallel. The decision trail is the custom status,
//! readable over the status API while the flow runs.
//!
//! Each approver is asked with a link of their own, and an answer counts for
//! whom the host verified it came from (the link's holder), never for whom
//! its data names. An operator with the system key may answer on behalf of
//! the approver the data names; the trail marks such steps `onBehalf`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use durango_sdk::http::Request;
use durango_sdk::{
    ActivityContext, Error, Event, LogLevel, OrchestrationContext, Sender, TaskHandle,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

const DEFAULT_TIMEOUT_SECONDS: u64 = 24 * 3600;
/// How long an approver's link outlives the deadline of the wait it
/// answers (a page opened just before the deadline can still be sent).
const DEFAULT_LINK_MARGIN_SECONDS: u64 = 600;
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
    /// Read only from an operator (system key): whom they answer for. An
    /// answer through a link always speaks for the link's holder.
    #[serde(default)]
    approver: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

/// What `RequestApproval` gets: whom to ask, and until when the link works.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Ask {
    request: ApprovalRequest,
    approver: String,
    level: usize,
    /// Milliseconds since the epoch: the wait's deadline plus the margin.
    link_expires_at: u64,
}

/// Whom an answer speaks for.
struct Speaker {
    approver: String,
    /// An operator answered with the system key.
    on_behalf: bool,
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
    /// An operator answered for the approver with the system key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    on_behalf: bool,
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

/// When the links for a wait that ends at `deadline` stop working.
fn link_expiry(ctx: &OrchestrationContext, deadline: SystemTime) -> Result<u64, Error> {
    let margin = ctx
        .setting_as("ApprovalLinkMarginSeconds")?
        .unwrap_or(DEFAULT_LINK_MARGIN_SECONDS);
    let at = deadline + Duration::from_secs(margin);
    Ok(at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64))
}

/// Whom an answer speaks for: the holder of the link it came through, or,
/// from an operator with the system key, the approver its data names. An
/// answer through the instance's general link speaks for nobody.
fn speaker(event: &Event<Decision>) -> Option<Speaker> {
    match &event.sender {
        Sender::Holder(holder) => Some(Speaker {
            approver: holder.clone(),
            on_behalf: false,
        }),
        Sender::SystemKey => event.data.approver.clone().map(|approver| Speaker {
            approver,
            on_behalf: true,
        }),
        Sender::UnnamedLink => None,
    }
}

/// An answer that does not count, written to the host's log once.
fn ignore(ctx: &OrchestrationContext, why: &str) {
    ctx.log(
        LogLevel::Warn,
        &format!("ignored an approval answer: {why}"),
    );
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
    let window = timeout(&ctx, &request)?;
    let mut trail: Vec<Step> = Vec::new();
    let mut decision = "expired";
    for (level, approver) in request.approvers.iter().enumerate() {
        let deadline = ctx.current_time() + window;
        let ask = Ask {
            request: request.clone(),
            approver: approver.clone(),
            level: level + 1,
            link_expires_at: link_expiry(&ctx, deadline)?,
        };
        // Shown before the ask goes out, so the answer that moved the request
        // here (raised with `?timeout=`) already reads who decides next.
        ctx.set_custom_status(json!({"waitingFor": approver, "level": level + 1, "trail": trail}));
        let _: () = ctx.call_activity("RequestApproval", &ask).await?;
        let timer = ctx.create_timer(deadline);
        let answer = loop {
            let reply = ctx.wait_for_event_with_sender::<Decision>(EVENT);
            if ctx.when_any(&[&reply, &timer]).await != 0 {
                break None;
            }
            let event = match reply.await {
                Ok(event) => event,
                Err(e) => {
                    ignore(&ctx, &e.message);
                    continue;
                }
            };
            match speaker(&event) {
                // Only the approver asked at this level decides it.
                Some(who) if who.approver == *approver => break Some((event.data, who)),
                Some(who) => ignore(
                    &ctx,
                    &format!("{} was not asked at level {}", who.approver, level + 1),
                ),
                None => ignore(&ctx, "it came through a link that names nobody"),
            }
        };
        if !timer.is_completed() {
            timer.cancel();
        }
        match answer {
            None => {
                trail.push(step(level, approver, false, "timed out", None));
                if let Some(next) = request.approvers.get(level + 1) {
                    let escalation = json!({"request": request, "from": approver, "to": next, "level": level + 2});
                    let _: () = ctx.call_activity("Escalate", &escalation).await?;
                }
                decision = "expired";
            }
            Some((d, who)) if d.approved => {
                trail.push(step(
                    level,
                    &who.approver,
                    who.on_behalf,
                    "approved",
                    d.comment,
                ));
                decision = "approved";
            }
            Some((d, who)) => {
                trail.push(step(
                    level,
                    &who.approver,
                    who.on_behalf,
                    "rejected",
                    d.comment,
                ));
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
    let deadline = ctx.current_time() + timeout(&ctx, &request)?;
    let link_expires_at = link_expiry(&ctx, deadline)?;
    let asks = request
        .approvers
        .iter()
        .enumerate()
        .map(|(level, approver)| {
            let ask = Ask {
                request: request.clone(),
                approver: approver.clone(),
                level: level + 1,
                link_expires_at,
            };
            ctx.call_activity::<()>("RequestApproval", ask)
        })
        .collect();
    for sent in ctx.when_all(asks).await {
        sent?;
    }
    let timer = ctx.create_timer(deadline);
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
        let reply = ctx.wait_for_event_with_sender::<Decision>(EVENT);
        if ctx.when_any(&[&reply, &timer]).await != 0 {
            break "expired";
        }
        let event = match reply.await {
            Ok(event) => event,
            Err(e) => {
                ignore(&ctx, &e.message);
                continue;
            }
        };
        let Some(who) = speaker(&event) else {
            ignore(&ctx, "it came through a link that names nobody");
            continue;
        };
        let Some(level) = request.approvers.iter().position(|a| *a == who.approver) else {
            ignore(
                &ctx,
                &format!("{} is not one of the approvers", who.approver),
            );
            continue;
        };
        if trail.iter().any(|s| s.approver == who.approver) {
            ignore(&ctx, &format!("{} answered already", who.approver));
            continue; // each approver counts once
        }
        let outcome = if event.data.approved {
            "approved"
        } else {
            "rejected"
        };
        trail.push(step(
            level,
            &who.approver,
            who.on_behalf,
            outcome,
            event.data.comment,
        ));
    };
    if !timer.is_completed() {
        timer.cancel();
    }
    finish(&ctx, request, decision, trail).await
}

fn step(
    level: usize,
    approver: &str,
    on_behalf: bool,
    outcome: &'static str,
    comment: Option<String>,
) -> Step {
    Step {
        level: level + 1,
        approver: approver.to_string(),
        outcome,
        comment,
        on_behalf,
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

/// Asks one approver, with links of their own: one that raises
/// `ApprovalEvent` on this instance as them, one that reads its status;
/// both stop working at the wait's deadline plus the margin.
fn request_approval(ctx: &ActivityContext, ask: Ask) -> Result<(), Error> {
    let expires = Some(UNIX_EPOCH + Duration::from_millis(ask.link_expires_at));
    post(
        ctx,
        json!({
            "kind": "approvalRequested",
            "instanceId": ctx.instance_id,
            "requestId": ask.request.request_id,
            "amount": ask.request.amount,
            "approver": ask.approver,
            "level": ask.level,
            "respondUrl": ctx.send_event_url_for(EVENT, &ask.approver, expires)?,
            "statusUrl": ctx.status_url_for(&ask.approver, expires)?,
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
