//! Config values named for the runtime (`os.environ/NAME`, `$NAME`), read from worker vars
//! and secrets on each request.

use worker::Env;

use crate::config::ValueRef;
use crate::openai::ApiError;
use crate::secret::Secret;

/// The value of a config reference. A missing var is the operator's mistake, reported with its
/// name (never its value) so it can be fixed with `wrangler secret put NAME`.
pub fn resolve(env: &Env, value: &ValueRef) -> Result<Secret, ApiError> {
    match value {
        ValueRef::Literal(v) => Ok(Secret::new(v.clone())),
        ValueRef::Env(name) => match env.var(name) {
            Ok(v) if !v.to_string().is_empty() => Ok(Secret::new(v.to_string())),
            _ => Err(ApiError::internal(format!(
                "The gateway is misconfigured: the worker var or secret `{name}` is not set."
            ))),
        },
    }
}
