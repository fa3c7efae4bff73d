//! SMS phone verification, as in the Durable Functions sample (E4): send a
//! 4-digit code, then give the person a window (four tries) to send it back.

use std::time::Duration;

use durango_sdk::http::Request;
use durango_sdk::{ActivityContext, Error, OrchestrationContext, TaskHandle};
use serde::Deserialize;
use serde_json::{json, Value};

const DEFAULT_TIMEOUT_SECONDS: u64 = 90;
const MAX_TRIES: usize = 4;

/// The input: the phone number alone, or with a timeout for this challenge.
#[derive(Deserialize)]
#[serde(untagged)]
enum Challenge {
    PhoneNumber(String),
    #[serde(rename_all = "camelCase")]
    Detailed {
        phone_number: String,
        timeout_seconds: Option<u64>,
    },
}

async fn sms_phone_verification(
    ctx: OrchestrationContext,
    input: Challenge,
) -> Result<bool, Error> {
    let (phone_number, timeout_seconds) = match input {
        Challenge::PhoneNumber(number) => (number, None),
        Challenge::Detailed {
            phone_number,
            timeout_seconds,
        } => (phone_number, timeout_seconds),
    };
    let timeout_seconds = match timeout_seconds {
        Some(seconds) => seconds,
        None => ctx
            .setting_as("SmsChallengeTimeoutSeconds")?
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS),
    };

    let challenge_code: u32 = ctx
        .call_activity("E4_SendSmsChallenge", &phone_number)
        .await?;

    let timeout = ctx.sleep(Duration::from_secs(timeout_seconds));
    let mut authorized = false;
    for try_number in 1..=MAX_TRIES {
        let response = ctx.wait_for_event::<Value>("SmsChallengeResponse");
        if ctx.when_any(&[&response, &timeout]).await != 0 {
            break; // timed out
        }
        if parse_code(&response.await?) == Some(challenge_code) {
            authorized = true;
            break;
        }
        // What a form can show the person after a wrong code (an answer
        // raised with `?timeout=` gets it in the same request).
        ctx.set_custom_status(json!({ "triesLeft": MAX_TRIES - try_number }));
    }
    if !timeout.is_completed() {
        timeout.cancel();
    }
    Ok(authorized)
}

/// The code as the person sent it: a JSON number or a string of digits.
/// Anything else counts as a wrong code.
fn parse_code(reply: &Value) -> Option<u32> {
    match reply {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn send_sms_challenge(ctx: &ActivityContext, phone_number: String) -> Result<u32, Error> {
    // Drawn from the call's own random stream: if this call runs again (a
    // crash after Twilio took the message, before the result was
    // committed), it draws the same code, and Twilio, seeing the same
    // idempotency token, keeps the message the person already has.
    let code = (durango_sdk::random_u64() % 10_000) as u32;
    let account_sid = ctx.required_setting("TwilioAccountSid")?;
    let auth_token = ctx.required_setting("TwilioAuthToken")?;
    let from = ctx.required_setting("TwilioPhoneNumber")?;
    let base_url = ctx
        .setting("TwilioBaseUrl")
        .unwrap_or_else(|| "https://api.twilio.com".to_string());
    let url = format!(
        "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
        base_url.trim_end_matches('/')
    );
    let body = format!("Your verification code is {code:04}");
    let response = Request::post(&url)
        .basic_auth(&account_sid, &auth_token)
        .header("I-Twilio-Idempotency-Token", &ctx.idempotency_key)
        .form(&[("To", &phone_number), ("From", &from), ("Body", &body)])
        .send()?;
    if !response.is_success() {
        return Err(Error::msg(format!(
            "Twilio answered {} when sending the challenge: {}",
            response.status,
            response.text()
        )));
    }
    Ok(code)
}

durango_sdk::app! {
    orchestrator "E4_SmsPhoneVerification" => sms_phone_verification;
    activity "E4_SendSmsChallenge" => send_sms_challenge;
}
