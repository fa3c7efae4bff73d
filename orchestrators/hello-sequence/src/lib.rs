//! `E1_HelloSequence`: function chaining, as in the Durable Functions sample.

use durango_sdk::{ActivityContext, Error, OrchestrationContext};

async fn hello_sequence(ctx: OrchestrationContext, _: ()) -> Result<Vec<String>, Error> {
    let mut outputs = Vec::new();
    for city in ["Tokyo", "Seattle", "London"] {
        outputs.push(ctx.call_activity("E1_SayHello", city).await?);
    }
    Ok(outputs)
}

fn say_hello(_: &ActivityContext, name: String) -> Result<String, Error> {
    Ok(format!("Hello {name}!"))
}

durango_sdk::app! {
    orchestrator "E1_HelloSequence" => hello_sequence;
    activity "E1_SayHello" => say_hello;
}
