//! The thin layer between the Workers runtime and the pure modules: the fetch entry, the
//! route table, and the rendering of every answer (headers, errors, the log line).

mod proxy;
mod upstream;
mod vars;

use worker::{console_log, event, Context, Date, Env, Headers, Method, Request, Response, Result};

use crate::auth;
use crate::embedded;
use crate::ids;
use crate::log::RequestLog;
use crate::openai::{self, ApiError};

/// What a handler knows about the call it serves.
pub struct Call<'a> {
    pub env: &'a Env,
    pub started_ms: u64,
    pub log: RequestLog,
    /// Headers added to the answer, whether it succeeds or fails.
    pub headers: Vec<(&'static str, String)>,
    /// A stream writes the log line itself when it ends.
    pub log_deferred: bool,
}

pub fn now_ms() -> u64 {
    Date::now().as_millis()
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let started_ms = now_ms();
    let call_id = ids::uuid_v4().unwrap_or_else(|_| "00000000-0000-0000-0000-000000000000".into());
    let log = RequestLog {
        call_id: call_id.clone(),
        method: req.method().to_string(),
        route: req.path(),
        ..Default::default()
    };
    let mut call = Call { env: &env, started_ms, log, headers: Vec::new(), log_deferred: false };

    let mut response = match route(req, &mut call).await {
        Ok(response) => response,
        Err(error) => {
            call.log.error_type = Some(error.kind.as_str());
            error_response(&error)?
        }
    };
    let headers = response.headers_mut();
    headers.set("x-litellm-call-id", &call_id)?;
    for (name, value) in &call.headers {
        headers.set(name, value)?;
    }
    if !call.log_deferred {
        call.log.status = response.status_code();
        call.log.total_ms = now_ms().saturating_sub(started_ms);
        console_log!("{}", call.log.to_line());
    }
    Ok(response)
}

async fn route(req: Request, call: &mut Call<'_>) -> std::result::Result<Response, ApiError> {
    let path = req.path();
    let method = req.method();
    let allowed = match path.as_str() {
        "/chat/completions" | "/v1/chat/completions" => Method::Post,
        "/models" | "/v1/models" => Method::Get,
        "/health/liveliness" | "/health/liveness" | "/health/readiness" => Method::Get,
        p if model_id_in_path(p).is_some() => Method::Get,
        _ => return Err(ApiError::not_found(format!("Unknown route {method} {path}"))),
    };
    if method != allowed {
        return Err(ApiError::method_not_allowed(method.as_ref(), &path, allowed.as_ref()));
    }
    match path.as_str() {
        "/chat/completions" | "/v1/chat/completions" => proxy::chat(req, call).await,
        "/models" | "/v1/models" => {
            authenticate(&req, call.env)?;
            let config = embedded::config().map_err(ApiError::internal)?;
            json_response(200, &openai::model_list(config.model_names()))
        }
        "/health/liveliness" | "/health/liveness" => json_response(200, &serde_json::json!("I'm alive!")),
        "/health/readiness" => {
            let models = embedded::config().map_err(ApiError::internal)?.model_names().len();
            json_response(
                200,
                &serde_json::json!({"status": "healthy", "version": env!("CARGO_PKG_VERSION"), "models": models}),
            )
        }
        p => {
            authenticate(&req, call.env)?;
            let id = model_id_in_path(p).unwrap_or_default();
            let config = embedded::config().map_err(ApiError::internal)?;
            if config.deployment_for(&id).is_none() {
                let message = format!("The model `{id}` does not exist. Call `/v1/models` to view available models.");
                return Err(ApiError::not_found(message).with_param("model"));
            }
            json_response(200, &openai::model_object(&id))
        }
    }
}

/// `/models/{id}` or `/v1/models/{id}`: the id, percent-decoded (model names may hold `/`).
fn model_id_in_path(path: &str) -> Option<String> {
    let id = path.strip_prefix("/v1/models/").or_else(|| path.strip_prefix("/models/"))?;
    let decoded = worker::js_sys::decode_uri_component(id).ok()?.as_string()?;
    (!decoded.is_empty()).then_some(decoded)
}

/// Checks the master key in any of the accepted headers.
pub fn authenticate(req: &Request, env: &Env) -> std::result::Result<(), ApiError> {
    let presented = auth::presented_key(|name| req.headers().get(name).ok().flatten()).ok_or_else(|| {
        ApiError::unauthorized(
            "No API key provided. Send it as `Authorization: Bearer <key>` or in the `x-litellm-api-key` header.",
        )
    })?;
    let config = embedded::config().map_err(ApiError::internal)?;
    let Some(master) = &config.master_key else {
        return Err(ApiError::unauthorized(
            "This gateway has no master key configured (general_settings.master_key), so no key is accepted.",
        ));
    };
    let master = vars::resolve(env, master)?;
    if auth::constant_time_eq(presented.as_bytes(), master.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("Invalid API key."))
    }
}

pub fn unknown_model(model: &str) -> ApiError {
    ApiError::invalid_request(
        format!("Invalid model name passed in model={model}. Call `/v1/models` to view available models for your key."),
        "model",
    )
}

pub fn json_response(status: u16, body: &serde_json::Value) -> std::result::Result<Response, ApiError> {
    bytes_response(status, body.to_string().into_bytes())
}

pub fn bytes_response(status: u16, body: Vec<u8>) -> std::result::Result<Response, ApiError> {
    let headers = Headers::new();
    headers.set("content-type", "application/json").map_err(runtime_error)?;
    Response::from_bytes(body).map(|r| r.with_status(status).with_headers(headers)).map_err(runtime_error)
}

fn error_response(error: &ApiError) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if let Some(seconds) = error.retry_after_s {
        headers.set("retry-after", &seconds.to_string())?;
    }
    Ok(Response::from_bytes(error.to_json().to_string().into_bytes())?.with_status(error.status).with_headers(headers))
}

/// A failure of the Workers runtime itself, reported as a 500 without internal detail.
pub fn runtime_error(e: worker::Error) -> ApiError {
    ApiError::internal(format!("gateway runtime error: {e}"))
}
