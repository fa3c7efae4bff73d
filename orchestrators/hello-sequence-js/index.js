// E1_HelloSequenceJs: function chaining, ported from the Durable Functions
// JavaScript sample (E1_HelloSequence).
import * as df from "../../guest-sdk/js/durango.js";

df.app.orchestration("E1_HelloSequenceJs", function* (context) {
  const outputs = [];
  outputs.push(yield context.df.callActivity("E1_SayHelloJs", "Tokyo"));
  outputs.push(yield context.df.callActivity("E1_SayHelloJs", "Seattle"));
  outputs.push(yield context.df.callActivity("E1_SayHelloJs", "London"));
  return outputs;
});

df.app.activity("E1_SayHelloJs", { handler: (name) => `Hello ${name}!` });

export { app, orchestrator, activity } from "../../guest-sdk/js/durango.js";
