# SMS phone verification, ported from the Durable Functions Python sample
# (E4_SmsPhoneVerification): send a 4-digit code, then give the person a
# window (four tries) to send it back.
import random
from datetime import timedelta
from urllib.parse import urlencode

import durango as df

DEFAULT_TIMEOUT_SECONDS = 90
MAX_TRIES = 4

app = df.DFApp()


@app.orchestration_trigger(context_name="context")
def E4_SmsPhoneVerificationPy(context: df.DurableOrchestrationContext):
    challenge = context.get_input()
    phone_number = challenge.get("phoneNumber") if isinstance(challenge, dict) else challenge
    if not phone_number or not isinstance(phone_number, str):
        raise ValueError("A phone number input is required.")
    timeout_seconds = challenge.get("timeoutSeconds") if isinstance(challenge, dict) else None
    if timeout_seconds is None:
        timeout_seconds = int(context.get_setting("SmsChallengeTimeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)

    challenge_code = yield context.call_activity("E4_SendSmsChallengePy", phone_number)

    # The two-minute window of the sample, as long as the input asks.
    expiration = context.current_utc_datetime + timedelta(seconds=timeout_seconds)
    timeout_task = context.create_timer(expiration)

    authorized = False
    for retry_count in range(MAX_TRIES):
        challenge_response_task = context.wait_for_external_event("SmsChallengeResponse")
        winner = yield context.task_any([challenge_response_task, timeout_task])
        if winner == timeout_task:
            break  # timed out
        if parse_code(challenge_response_task.result) == challenge_code:
            authorized = True
            break
        # What a form can show the person after a wrong code.
        context.set_custom_status({"triesLeft": MAX_TRIES - retry_count - 1})

    if not timeout_task.is_completed:
        # All pending timers must be complete or canceled before the function exits.
        timeout_task.cancel()

    return authorized


def parse_code(reply):
    """The code as the person sent it: a JSON number or a string of digits."""
    if isinstance(reply, int) and not isinstance(reply, bool):
        return reply
    if isinstance(reply, str) and reply.strip().isdigit():
        return int(reply.strip())
    return None


@app.activity_trigger(input_name="phone_number")
def E4_SendSmsChallengePy(phone_number: str, context: df.ActivityContext) -> int:
    # Drawn from the call's own random stream (the SDK seeds `random` per
    # call): a re-run of this call (a crash after Twilio took the message)
    # draws the same code, and Twilio, seeing the same idempotency token,
    # keeps the message already sent.
    code = random.randrange(10000)
    account_sid = context.required_setting("TwilioAccountSid")
    auth_token = context.required_setting("TwilioAuthToken")
    from_number = context.required_setting("TwilioPhoneNumber")
    base_url = (context.setting("TwilioBaseUrl") or "https://api.twilio.com").rstrip("/")
    body = urlencode({"To": phone_number, "From": from_number, "Body": f"Your verification code is {code:04}"})
    response = df.http.post(
        f"{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json",
        headers={
            "Authorization": df.http.basic_auth(account_sid, auth_token),
            "Content-Type": "application/x-www-form-urlencoded",
            "I-Twilio-Idempotency-Token": context.idempotency_key,
        },
        body=body.encode(),
    )
    if not response.ok:
        raise RuntimeError(f"Twilio answered {response.status} when sending the challenge: {response.text()}")
    return code


from durango import App, Orchestrator, Activity  # noqa: E402,F401 (the component's exports)
