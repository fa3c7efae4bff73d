//! Host-side bindings of the `durango:orchestration` function-app world.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "function-app",
    imports: { default: trappable },
    exports: { default: async },
});

pub use self::durango::orchestration::types::{
    ActivityContext, FunctionKind, LogLevel, PollResult,
};
