//! Orchestrators for the host's tests and benchmarks; some misbehave on
//! purpose.

use std::time::Duration;

use durango_sdk::{ActivityContext, Error, OrchestrationContext, RetryPolicy};

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

/// Calls an activity that fails until its third attempt, with the retry
/// policy's attempt limit as input: the host retries it durably.
async fn retries(ctx: OrchestrationContext, max_attempts: u32) -> Result<u32, Error> {
    let policy = RetryPolicy::new(max_attempts, Duration::from_millis(50));
    Ok(ctx
        .call_activity_with_retry("FailsTwice", (), policy)
        .await?)
}

fn fails_twice(ctx: &ActivityContext, _: ()) -> Result<u32, Error> {
    if ctx.attempt < 3 {
        return Err(Error::msg(format!(
            "attempt {} failed on purpose",
            ctx.attempt
        )));
    }
    Ok(ctx.attempt)
}

/// Calls an activity that fails until the host has the setting `RewindOk`:
/// fix the setting, rewind the failed instance, and it completes.
async fn needs_setting(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    Ok(ctx.call_activity("ReadRewindOk", ()).await?)
}

fn read_rewind_ok(ctx: &ActivityContext, _: ()) -> Result<String, Error> {
    ctx.required_setting("RewindOk")
}

/// Starts `EchoAfterEvent` as a child under `{this id}-child` and returns
/// what the child returned.
async fn parent_of_echo(ctx: OrchestrationContext, event: String) -> Result<String, Error> {
    let child_id = format!("{}-child", ctx.instance_id());
    Ok(ctx
        .call_sub_orchestrator_with_id("EchoAfterEvent", &child_id, event)
        .await?)
}

/// Adds each `Add` event to a running total; every addition is a new round
/// (continue-as-new). Completes once the total reaches 10.
async fn counter(ctx: OrchestrationContext, total: i64) -> Result<i64, Error> {
    ctx.set_custom_status(total);
    if total >= 10 {
        return Ok(total);
    }
    let add: i64 = ctx.wait_for_event("Add").await?;
    ctx.continue_as_new(total + add)
}

/// Sets a custom status larger than the host allows.
async fn huge_status(ctx: OrchestrationContext, bytes: usize) -> Result<(), Error> {
    ctx.set_custom_status("x".repeat(bytes));
    let _: () = ctx.wait_for_event("Never").await?;
    Ok(())
}

/// Fails with an error that quotes the secret setting `LeakySecret`: the
/// host must redact it everywhere it shows the error.
async fn leaks_secret(ctx: OrchestrationContext, _: ()) -> Result<(), Error> {
    ctx.log(durango_sdk::LogLevel::Info, "about to leak");
    Ok(ctx.call_activity("QuoteSecret", ()).await?)
}

fn quote_secret(ctx: &ActivityContext, _: ()) -> Result<(), Error> {
    let secret = ctx.required_setting("LeakySecret")?;
    println!("printing {secret} to stdout");
    Err(Error::msg(format!("the provider rejected token {secret}")))
}

/// Hands the secret setting `LeakySecret` on in the forms it travels in:
/// as an activity's output (JSON-escaped there), then in an error quoting
/// a Basic header of `LeakySid:LeakySecret`, a form, a URL path and a JSON
/// body. The host must redact every one of them.
async fn leaks_secret_forms(ctx: OrchestrationContext, _: ()) -> Result<(), Error> {
    let _: String = ctx.call_activity("SecretItself", ()).await?;
    Ok(ctx.call_activity("QuoteSecretForms", ()).await?)
}

fn secret_itself(ctx: &ActivityContext, _: ()) -> Result<String, Error> {
    ctx.required_setting("LeakySecret")
}

fn quote_secret_forms(ctx: &ActivityContext, _: ()) -> Result<(), Error> {
    use base64::Engine as _;
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let sid = ctx.required_setting("LeakySid")?;
    let secret = ctx.required_setting("LeakySecret")?;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{sid}:{secret}"));
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", &secret)
        .finish();
    let path = utf8_percent_encode(&secret, NON_ALPHANUMERIC);
    let body = serde_json::json!({ "token": secret });
    Err(Error::msg(format!(
        "rejected: Authorization: Basic {basic}; POST /tokens/{path}?{form} {body}"
    )))
}

/// Reads the secret setting `LeakySecret`, which orchestrators may not.
async fn reads_secret(ctx: OrchestrationContext, _: ()) -> Result<Option<String>, Error> {
    Ok(ctx.setting("LeakySecret"))
}

/// Runs `SlowNotify`, an activity that takes its time and then tells a
/// webhook it finished.
async fn slow_step(ctx: OrchestrationContext, step: serde_json::Value) -> Result<(), Error> {
    Ok(ctx.call_activity("SlowNotify", step).await?)
}

fn slow_notify(_: &ActivityContext, step: serde_json::Value) -> Result<(), Error> {
    let millis = step["millis"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(millis));
    let url = step["url"].as_str().ok_or_else(|| Error::msg("no url"))?;
    durango_sdk::http::Request::post(url)
        .json(&serde_json::json!({"finished": true}))?
        .send()?;
    Ok(())
}

/// Loops forever without waiting: the host must stop it.
async fn spins(_: OrchestrationContext, _: ()) -> Result<(), Error> {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates a MiB at a time without end: the memory limit must stop it.
/// It reports how far it got, so a test can tell the limit held.
async fn hoards(_: OrchestrationContext, _: ()) -> Result<usize, Error> {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block: Vec<u8> = Vec::new();
        if block.try_reserve_exact(1 << 20).is_err() {
            return Err(Error::msg(format!(
                "memory allocation failed after {} MiB",
                kept.len()
            )));
        }
        block.resize(1 << 20, 1);
        kept.push(std::hint::black_box(block));
    }
}

/// Recurses until the stack runs out.
async fn overflows(_: OrchestrationContext, depth: u64) -> Result<u64, Error> {
    fn down(n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            1 + std::hint::black_box(down(n - 1))
        }
    }
    Ok(down(depth))
}

/// Calls `Spin`, an activity that never returns, with a time limit and
/// retries.
async fn spinning_activity(ctx: OrchestrationContext, attempts: u32) -> Result<(), Error> {
    let mut policy = RetryPolicy::new(attempts, Duration::from_millis(10));
    policy.attempt_timeout = Some(Duration::from_millis(300));
    Ok(ctx.call_activity_with_retry("Spin", (), policy).await?)
}

fn spin(_: &ActivityContext, _: ()) -> Result<(), Error> {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Five activities in a row (the benchmark's longer chain).
async fn hello_five(ctx: OrchestrationContext, _: ()) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for name in ["one", "two", "three", "four", "five"] {
        out.push(ctx.call_activity("Echo", name).await?);
    }
    Ok(out)
}

/// Waits for `Answer`, raced against a timer an hour away (the shape of
/// a phone verification), and returns whether the answer came first.
async fn wait_or_timeout(ctx: OrchestrationContext, _: ()) -> Result<bool, Error> {
    let timer = ctx.sleep(Duration::from_secs(3600));
    let answer = ctx.wait_for_event::<serde_json::Value>("Answer");
    let answered = ctx.when_any(&[&answer, &timer]).await == 0;
    if answered {
        timer.cancel();
    }
    Ok(answered)
}

/// A durable timer at `fire_at` (milliseconds since the epoch).
async fn sleep_until(ctx: OrchestrationContext, fire_at: u64) -> Result<(), Error> {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(fire_at);
    ctx.create_timer(at).await;
    Ok(())
}

/// Reads a setting `reads` times, then waits for `count` events named
/// `Tick`: a history as long as the benchmark asks (a read is one event).
async fn collect(ctx: OrchestrationContext, (count, reads): (u32, u32)) -> Result<u32, Error> {
    for _ in 0..reads {
        let _ = ctx.setting("BenchPadding");
    }
    for _ in 0..count {
        let _: serde_json::Value = ctx.wait_for_event("Tick").await?;
    }
    Ok(count)
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
    orchestrator "Retries" => retries;
    orchestrator "NeedsSetting" => needs_setting;
    orchestrator "ParentOfEcho" => parent_of_echo;
    orchestrator "Counter" => counter;
    orchestrator "HugeStatus" => huge_status;
    orchestrator "LeaksSecret" => leaks_secret;
    orchestrator "LeaksSecretForms" => leaks_secret_forms;
    orchestrator "ReadsSecret" => reads_secret;
    orchestrator "SlowStep" => slow_step;
    orchestrator "Spins" => spins;
    orchestrator "Hoards" => hoards;
    orchestrator "Overflows" => overflows;
    orchestrator "SpinningActivity" => spinning_activity;
    orchestrator "HelloFive" => hello_five;
    orchestrator "WaitOrTimeout" => wait_or_timeout;
    orchestrator "SleepUntil" => sleep_until;
    orchestrator "Collect" => collect;
    activity "Echo" => echo;
    activity "FailsTwice" => fails_twice;
    activity "ReadRewindOk" => read_rewind_ok;
    activity "QuoteSecret" => quote_secret;
    activity "SecretItself" => secret_itself;
    activity "QuoteSecretForms" => quote_secret_forms;
    activity "SlowNotify" => slow_notify;
    activity "Spin" => spin;
}
