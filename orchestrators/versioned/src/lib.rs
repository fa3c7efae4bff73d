//! `Versioned`, one app in three versions, built from this crate with no
//! feature (v1), `v2` and `v3` (the Makefile builds all three):
//!
//! - v1: step 0 activity `Step("one")`, step 1 wait for `Go`, step 2
//!   activity `Step("two")`, step 3 wait for `Go`; output the results.
//! - v2: v1, then one more activity `Step("three")` after the second
//!   `Go`: a step after every point a v1 instance can be waiting at. And
//!   behind patch `two-b`, `StepB("two-b")` instead of `Step("two")`: taken
//!   by instances that reach that point on v2, not by those whose history
//!   v1 wrote past it.
//! - v3: v1 without `Step("two")`: an instance waiting at its second `Go`
//!   has history that v3 cannot replay.

use durango_sdk::{ActivityContext, Error, OrchestrationContext};

async fn versioned(ctx: OrchestrationContext, _: ()) -> Result<Vec<String>, Error> {
    // Every version shows the one the instance started on.
    ctx.set_custom_status(ctx.started_version());
    let mut done = vec![ctx.call_activity::<String>("Step", "one").await?];
    ctx.wait_for_event::<serde_json::Value>("Go").await?;
    if cfg!(feature = "v2") && ctx.patched("two-b") {
        done.push(ctx.call_activity("StepB", "two-b").await?);
    } else if !cfg!(feature = "v3") {
        done.push(ctx.call_activity("Step", "two").await?);
    }
    ctx.wait_for_event::<serde_json::Value>("Go").await?;
    if cfg!(feature = "v2") {
        done.push(ctx.call_activity("Step", "three").await?);
    }
    Ok(done)
}

fn step(_: &ActivityContext, name: String) -> Result<String, Error> {
    Ok(format!("did {name}"))
}

durango_sdk::app! {
    orchestrator "Versioned" => versioned;
    activity "Step" => step;
    activity "StepB" => step;
}
