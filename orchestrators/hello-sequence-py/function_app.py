# E1_HelloSequencePy: function chaining, ported from the Durable Functions
# Python sample (E1_HelloSequence).
import durango as df

app = df.DFApp()


@app.orchestration_trigger(context_name="context")
def E1_HelloSequencePy(context: df.DurableOrchestrationContext):
    result1 = yield context.call_activity("E1_SayHelloPy", "Tokyo")
    result2 = yield context.call_activity("E1_SayHelloPy", "Seattle")
    result3 = yield context.call_activity("E1_SayHelloPy", "London")
    return [result1, result2, result3]


@app.activity_trigger(input_name="name")
def E1_SayHelloPy(name: str) -> str:
    return f"Hello {name}!"


from durango import App, Orchestrator, Activity  # noqa: E402,F401 (the component's exports)
