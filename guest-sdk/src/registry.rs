use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::activity::ActivityContext;
use crate::context::OrchestrationContext;
use crate::error::Error;

pub(crate) type Outcome = Result<String, String>;
pub(crate) type Orchestration = Pin<Box<dyn Future<Output = Outcome>>>;
type OrchestratorFn = Box<dyn Fn(OrchestrationContext, &str) -> Orchestration>;
type ActivityFn = Box<dyn Fn(&ActivityContext, &str) -> Outcome>;

/// The component's functions by name; filled by [`crate::app!`].
#[derive(Default)]
pub struct Registry {
    pub(crate) orchestrators: BTreeMap<String, OrchestratorFn>,
    pub(crate) activities: BTreeMap<String, ActivityFn>,
}

impl Registry {
    pub fn orchestrator<F, Fut, I, O>(&mut self, name: &str, function: F)
    where
        F: Fn(OrchestrationContext, I) -> Fut + 'static,
        Fut: Future<Output = Result<O, Error>> + 'static,
        I: DeserializeOwned,
        O: Serialize,
    {
        let label = name.to_string();
        let run = move |ctx: OrchestrationContext, input: &str| -> Orchestration {
            match decode_input::<I>(&label, input) {
                Err(message) => Box::pin(std::future::ready(Err(message))),
                Ok(input) => {
                    let running = function(ctx, input);
                    Box::pin(async move { encode_output(running.await) })
                }
            }
        };
        self.orchestrators.insert(name.to_string(), Box::new(run));
    }

    pub fn activity<F, I, O>(&mut self, name: &str, function: F)
    where
        F: Fn(&ActivityContext, I) -> Result<O, Error> + 'static,
        I: DeserializeOwned,
        O: Serialize,
    {
        let label = name.to_string();
        let run = move |ctx: &ActivityContext, input: &str| -> Outcome {
            let input = decode_input::<I>(&label, input)?;
            encode_output(function(ctx, input))
        };
        self.activities.insert(name.to_string(), Box::new(run));
    }
}

fn decode_input<I: DeserializeOwned>(function: &str, input: &str) -> Result<I, String> {
    crate::json::decode(input).map_err(|e| format!("{function}: input does not fit: {e}"))
}

fn encode_output<O: Serialize>(output: Result<O, Error>) -> Outcome {
    let output = output.map_err(|e| e.to_string())?;
    serde_json::to_string(&output).map_err(|e| format!("output does not serialize: {e}"))
}
