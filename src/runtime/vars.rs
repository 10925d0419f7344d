//! Config values named for the runtime (`os.environ/NAME`, `$NAME`), read from worker vars
//! and secrets.

use std::cell::RefCell;
use std::collections::HashMap;

use worker::Env;

use crate::config::ValueRef;
use crate::openai::ApiError;
use crate::secret::Secret;

thread_local! {
    /// name → value (`None`: not set or empty), read once per isolate: an isolate runs one
    /// version of the worker with one set of vars and secrets (a change deploys a new version),
    /// and each read from `env` costs a property lookup and a string copied into wasm.
    static VALUES: RefCell<HashMap<String, Option<String>>> = RefCell::new(HashMap::new());
}

/// The value of a config reference. A missing var is the operator's mistake, reported with its
/// name (never its value) so it can be fixed with `wrangler secret put NAME`.
pub fn resolve(env: &Env, value: &ValueRef) -> Result<Secret, ApiError> {
    match value {
        ValueRef::Literal(v) => Ok(Secret::new(v.clone())),
        ValueRef::Env(name) => match read(env, name) {
            Some(v) => Ok(Secret::new(v)),
            None => Err(ApiError::internal(format!(
                "The gateway is misconfigured: the worker var or secret `{name}` is not set."
            ))),
        },
    }
}

fn read(env: &Env, name: &str) -> Option<String> {
    if let Some(known) = VALUES.with(|v| v.borrow().get(name).cloned()) {
        return known;
    }
    let value = env.var(name).ok().map(|v| v.to_string()).filter(|v| !v.is_empty());
    VALUES.with(|v| v.borrow_mut().insert(name.to_string(), value.clone()));
    value
}
