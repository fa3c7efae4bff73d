// SMS phone verification, ported from the Durable Functions JavaScript
// sample (E4_SmsPhoneVerification): send a 4-digit code, then give the
// person a window (four tries) to send it back.
import * as df from "../../guest-sdk/js/durango.js";

const DEFAULT_TIMEOUT_SECONDS = 90;
const MAX_TRIES = 4;

df.app.orchestration("E4_SmsPhoneVerificationJs", function* (context) {
  const input = context.df.getInput();
  const phoneNumber = typeof input === "string" ? input : input?.phoneNumber;
  if (typeof phoneNumber !== "string" || !phoneNumber) {
    throw new Error("A phone number input is required.");
  }
  const timeoutSeconds = input?.timeoutSeconds
    ?? Number(context.df.getSetting("SmsChallengeTimeoutSeconds") ?? DEFAULT_TIMEOUT_SECONDS);

  const challengeCode = yield context.df.callActivity("E4_SendSmsChallengeJs", phoneNumber);

  // The two-minute window of the sample, as long as the input asks.
  const expiration = new Date(context.df.currentUtcDateTime.getTime() + timeoutSeconds * 1000);
  const timeoutTask = context.df.createTimer(expiration);

  let authorized = false;
  for (let retryCount = 0; retryCount < MAX_TRIES; retryCount++) {
    const challengeResponseTask = context.df.waitForExternalEvent("SmsChallengeResponse");
    const winner = yield context.df.Task.any([challengeResponseTask, timeoutTask]);
    if (winner === timeoutTask) {
      break; // timed out
    }
    if (parseCode(challengeResponseTask.result) === challengeCode) {
      authorized = true;
      break;
    }
    // What a form can show the person after a wrong code.
    context.df.setCustomStatus({ triesLeft: MAX_TRIES - retryCount - 1 });
  }

  if (!timeoutTask.isCompleted) {
    // All pending timers must be complete or canceled before the function exits.
    timeoutTask.cancel();
  }
  return authorized;
});

/** The code as the person sent it: a JSON number or a string of digits. */
function parseCode(reply) {
  if (typeof reply === "number" && Number.isInteger(reply)) return reply;
  if (typeof reply === "string" && /^\s*\d+\s*$/.test(reply)) return Number(reply.trim());
  return undefined;
}

df.app.activity("E4_SendSmsChallengeJs", {
  handler: async (phoneNumber, context) => {
    // Drawn from the call's own random stream: a re-run of this call (a
    // crash after Twilio took the message) draws the same code, and Twilio,
    // seeing the same idempotency token, keeps the message already sent.
    const challengeCode = crypto.getRandomValues(new Uint32Array(1))[0] % 10000;
    const accountSid = context.requiredSetting("TwilioAccountSid");
    const authToken = context.requiredSetting("TwilioAuthToken");
    const from = context.requiredSetting("TwilioPhoneNumber");
    const baseUrl = (context.setting("TwilioBaseUrl") ?? "https://api.twilio.com").replace(/\/+$/, "");
    const body = new URLSearchParams({
      To: phoneNumber,
      From: from,
      Body: `Your verification code is ${String(challengeCode).padStart(4, "0")}`,
    });
    const response = await fetch(`${baseUrl}/2010-04-01/Accounts/${accountSid}/Messages.json`, {
      method: "POST",
      headers: {
        "Authorization": `Basic ${btoa(`${accountSid}:${authToken}`)}`,
        "Content-Type": "application/x-www-form-urlencoded",
        "I-Twilio-Idempotency-Token": context.idempotencyKey,
      },
      body: body.toString(),
    });
    if (!response.ok) {
      throw new Error(`Twilio answered ${response.status} when sending the challenge: ${await response.text()}`);
    }
    return challengeCode;
  },
});

export { app, orchestrator, activity } from "../../guest-sdk/js/durango.js";
