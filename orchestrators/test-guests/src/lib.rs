//! Orchestrators that misbehave on purpose, for the host's tests.

use std::time::Duration;

use durango_sdk::{ActivityContext, Error, OrchestrationContext};

/// Takes a different path when it is replayed: the host must notice.
async fn non_deterministic(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    if ctx.is_replaying() {
        ctx.sleep(Duration::from_secs(1)).await;
    } else {
        let _: String = ctx.call_activity("Echo", "first").await?;
    }
    let reply: String = ctx.wait_for_event("Continue").await?;
    Ok(reply)
}

/// Waits for one event, then echoes it through an activity.
async fn echo_after_event(ctx: OrchestrationContext, name: String) -> Result<String, Error> {
    let reply: String = ctx.wait_for_event(&name).await?;
    Ok(ctx.call_activity("Echo", reply).await?)
}

/// Reads the system clock and randomness through plain std: the sandbox
/// makes both replay-safe, so the output is the same hot or cold.
async fn std_clock_and_random(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    let seen = format!(
        "{:?}/{}",
        std::time::SystemTime::now(),
        durango_sdk::random_u64()
    );
    let _: String = ctx.wait_for_event("Continue").await?;
    let again = format!(
        "{:?}/{}",
        std::time::SystemTime::now(),
        durango_sdk::random_u64()
    );
    Ok(format!("{seen} {again}"))
}

/// Panics with a message.
async fn panics(_: OrchestrationContext, message: String) -> Result<(), Error> {
    panic!("{message}");
}

fn echo(_: &ActivityContext, text: String) -> Result<String, Error> {
    Ok(text)
}

durango_sdk::app! {
    orchestrator "NonDeterministic" => non_deterministic;
    orchestrator "EchoAfterEvent" => echo_after_event;
    orchestrator "StdClockAndRandom" => std_clock_and_random;
    orchestrator "Panics" => panics;
    activity "Echo" => echo;
}
