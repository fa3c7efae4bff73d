//! Orchestrators for the host's tests and benchmarks; some misbehave on
//! purpose.

use std::time::Duration;

use durango_sdk::{ActivityContext, Error, OrchestrationContext, RetryPolicy, Sender};

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
/// makes both replay-safe, so the output is the same hot or cold. What it
/// saw first is also its custom status, as seen on the first run: a replay
/// must see the same. Each reading starts with the clock in milliseconds.
async fn std_clock_and_random(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    let seen = clock_and_random();
    if !ctx.is_replaying() {
        ctx.set_custom_status(&seen);
    }
    let _: String = ctx.wait_for_event("Continue").await?;
    Ok(format!("{seen} {}", clock_and_random()))
}

/// Milliseconds since the epoch by std's clock, then a random number.
fn clock_and_random() -> String {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}/{}", since_epoch.as_millis(), durango_sdk::random_u64())
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

/// Runs `NeedsSetting` as a child: it fails, and so does this parent, until
/// the setting is fixed and the parent rewound (which rewinds the child).
async fn parent_of_needs_setting(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    Ok(ctx.call_sub_orchestrator("NeedsSetting", ()).await?)
}

/// Sets a timer `seconds` out, then fails (until `RewindOk` is set) while
/// the timer is pending; rewound, it must wait for that same timer again.
async fn timer_then_setting(ctx: OrchestrationContext, seconds: u64) -> Result<String, Error> {
    let timer = ctx.sleep(Duration::from_secs(seconds));
    let setting: String = ctx.call_activity("ReadRewindOk", ()).await?;
    timer.await;
    Ok(setting)
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

/// Hands out links (shown as the custom status), then waits for `count`
/// `Reply` events and returns who sent each, as the host verified it.
async fn who_sent(ctx: OrchestrationContext, count: u32) -> Result<Vec<String>, Error> {
    let links: serde_json::Value = ctx.call_activity("HandOutLinks", ()).await?;
    ctx.set_custom_status(&links);
    let mut senders = Vec::new();
    for _ in 0..count {
        let event = ctx
            .wait_for_event_with_sender::<serde_json::Value>("Reply")
            .await?;
        senders.push(match event.sender {
            Sender::SystemKey => "systemKey".to_string(),
            Sender::Holder(holder) => format!("holder:{holder}"),
            Sender::UnnamedLink => "unnamedLink".to_string(),
        });
    }
    Ok(senders)
}

/// The instance's general links, and links for the recipient `pat`.
fn hand_out_links(ctx: &ActivityContext, _: ()) -> Result<serde_json::Value, Error> {
    Ok(serde_json::json!({
        "general": ctx.send_event_url("Reply"),
        "generalStatus": ctx.status_url,
        "named": ctx.send_event_url_for("Reply", "pat", None)?,
        "namedStatus": ctx.status_url_for("pat", None)?,
    }))
}

/// Panics with a message.
async fn panics(_: OrchestrationContext, message: String) -> Result<(), Error> {
    panic!("{message}");
}

fn echo(_: &ActivityContext, text: String) -> Result<String, Error> {
    Ok(text)
}

/// Waits for event `Early` only after a slow activity (`ms`): an event
/// raised meanwhile must be kept for the wait.
async fn wait_after_slow_step(ctx: OrchestrationContext, ms: u64) -> Result<String, Error> {
    let _: String = ctx
        .call_activity("SleepThenEcho", serde_json::json!({"ms": ms, "text": ""}))
        .await?;
    Ok(ctx.wait_for_event("Early").await?)
}

/// The hello sequence with slow activities (`ms` each): long enough to be
/// killed in the middle of.
async fn slow_hello(ctx: OrchestrationContext, ms: u64) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for city in ["Tokyo", "Seattle", "London"] {
        let text = format!("Hello {city}!");
        let input = serde_json::json!({"ms": ms, "text": text});
        out.push(ctx.call_activity("SleepThenEcho", input).await?);
    }
    Ok(out)
}

/// Generation 0 leaves an activity and a timer out (both due in half a
/// second) and continues as new at once; generation 1 takes steps of the
/// same kinds, due later, and returns what answered them. A generation must
/// never see an earlier one's late outcomes.
async fn generations(ctx: OrchestrationContext, generation: u32) -> Result<String, Error> {
    let echo_after = |ms: u64, text: &str| {
        ctx.call_activity::<String>("SleepThenEcho", serde_json::json!({"ms": ms, "text": text}))
    };
    if generation == 0 {
        let _left_out = echo_after(500, "generation 0");
        let _timer = ctx.sleep(Duration::from_millis(500));
        return ctx.continue_as_new(1);
    }
    let activity = echo_after(3000, "generation 1");
    let timer = ctx.sleep(Duration::from_secs(60));
    if ctx.when_any(&[&activity, &timer]).await == 1 {
        return Ok("a timer fired early".into());
    }
    Ok(activity.await?)
}

#[derive(serde::Deserialize)]
struct SleepThenEcho {
    ms: u64,
    text: String,
}

fn sleep_then_echo(_: &ActivityContext, input: SleepThenEcho) -> Result<String, Error> {
    std::thread::sleep(Duration::from_millis(input.ms));
    Ok(input.text)
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
    orchestrator "Generations" => generations;
    orchestrator "WaitAfterSlowStep" => wait_after_slow_step;
    orchestrator "SlowHello" => slow_hello;
    orchestrator "ParentOfNeedsSetting" => parent_of_needs_setting;
    orchestrator "TimerThenSetting" => timer_then_setting;
    orchestrator "WhoSent" => who_sent;
    activity "Echo" => echo;
    activity "SleepThenEcho" => sleep_then_echo;
    activity "HandOutLinks" => hand_out_links;
    activity "FailsTwice" => fails_twice;
    activity "ReadRewindOk" => read_rewind_ok;
    activity "QuoteSecret" => quote_secret;
    activity "SecretItself" => secret_itself;
    activity "QuoteSecretForms" => quote_secret_forms;
    activity "SlowNotify" => slow_notify;
    activity "Spin" => spin;
}
