//! Anthropic's Messages API: `/v1/messages` through the pipeline, in its own wire format
//! (`anthropic::Messages`), and `/v1/messages/count_tokens`, answered by the gateway's own
//! estimate (Databricks has no such route).

use worker::web_sys;

use super::proxy::{self, resolve};
use super::{json_response, read_body, Call, Caller, Reply};
use crate::anthropic;
use crate::embedded;
use crate::endpoints::Endpoint;
use crate::openai::ApiError;

/// Serves a Messages route for an authenticated caller.
pub async fn serve(
    route: &Endpoint,
    req: web_sys::Request,
    call: &mut Call<'_>,
    caller: Caller,
) -> Result<Reply, ApiError> {
    if *route == Endpoint::Messages {
        return proxy::proxy(&mut anthropic::Messages::new(), req, call, caller).await;
    }
    let bytes = read_body(&req).await?;
    let request = anthropic::parse_count_tokens(&bytes)?;
    // Counted only for a model the caller may use, as a Message would be.
    let config = embedded::config().map_err(ApiError::internal)?;
    let resolved = resolve(config, &caller, &request.model)?;
    call.log.model = Some(resolved.group);
    Ok(json_response(200, &anthropic::count_tokens(&request)))
}
