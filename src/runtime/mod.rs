//! The thin layer between the Workers runtime and the pure modules: the fetch entry, the
//! route table, who the caller is, and the rendering of every answer (headers, errors, log).

mod accounting;
mod admin;
mod credentials;
mod dispatch;
mod health;
mod keystore;
mod messages;
mod metrics;
mod objects;
mod parties;
mod partystore;
mod proxy;
mod reports;
mod settlements;
mod spend;
mod tokens;
mod upstream;
mod vars;

use futures_util::StreamExt;
use worker::wasm_bindgen::{self, prelude::wasm_bindgen, JsValue};
use worker::{console_log, event, Context, Env, Headers, Method, Request, Response, Result};

use crate::auth;
use crate::body::BoundedBody;
use crate::config::AccessGroup;
use crate::embedded;
use crate::endpoints::{self, Endpoint};
use crate::headers::{self as answer_headers, AnswerHeaders};
use crate::ids;
use crate::keys::{self, KeyRecord};
use crate::log::RequestLog;
use crate::openai::{self, ApiError, ErrorKind, Kind, MAX_BODY_BYTES};
use crate::refusals;
use crate::responses::Responses;
use crate::wire::OpenAi;
use keystore::{KeyStore, Lookup};

/// What a handler knows about the call it serves.
pub struct Call<'a> {
    pub env: &'a Env,
    pub ctx: &'a Context,
    pub started_ms: u64,
    pub log: RequestLog,
    /// What the answer's headers say, whether it succeeds or fails: set by the pipeline.
    pub headers: AnswerHeaders,
    /// A stream writes the log line itself when it ends.
    pub log_deferred: bool,
    /// How the answer's errors are written: set by the route before anything can fail, so
    /// that an Anthropic client gets its own error shape even for a refused key.
    pub errors: ErrorFormat,
}

/// The error shape of the API a route serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorFormat {
    /// `{"error": {"message", "type", "param", "code"}}`
    #[default]
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}`, with Anthropic's statuses.
    Anthropic,
}

impl ErrorFormat {
    /// The status and body an error is answered with.
    fn render(self, error: &ApiError) -> (u16, Vec<u8>) {
        match self {
            ErrorFormat::OpenAi => (error.status, error.to_json().to_string().into_bytes()),
            ErrorFormat::Anthropic => {
                (crate::anthropic::error_status(error), crate::anthropic::error_json(error).to_string().into_bytes())
            }
        }
    }
}

/// Who is calling: the master key, or a virtual key that is usable right now.
pub enum Caller {
    Master,
    Key(Box<KeyRecord>),
}

impl Caller {
    /// Whether the caller may use a model group (a fallback's, say).
    pub fn may_use_group(&self, group: &str, access_groups: &[AccessGroup]) -> bool {
        match self {
            Caller::Master => true,
            Caller::Key(record) => record.may_use_group(group, access_groups),
        }
    }
}

/// The clock, as `Date.now()`: worker's `Date::now()` allocates a JavaScript `Date` for each
/// reading, and a request reads the clock a dozen times.
pub fn now_ms() -> u64 {
    worker::js_sys::Date::now() as u64
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    // A test build holds several configs: the instance's var says which one it runs.
    #[cfg(feature = "test-configs")]
    embedded::select(env.var("GATEWAY_TEST_CONFIG").ok().map(|v| v.to_string()));
    let started_ms = now_ms();
    let call_id = ids::uuid_v4().unwrap_or_else(|_| "00000000-0000-0000-0000-000000000000".into());
    let log = RequestLog {
        call_id: call_id.clone(),
        method: req.method().to_string(),
        route: endpoints::loggable_path(&req.path()),
        ..Default::default()
    };
    let mut call = Call {
        env: &env,
        ctx: &ctx,
        started_ms,
        log,
        headers: AnswerHeaders::default(),
        log_deferred: false,
        errors: ErrorFormat::default(),
    };

    let mut response = match route(req, &mut call).await {
        Ok(response) => response,
        Err(error) => {
            call.log.error_type = Some(error.kind.as_str());
            error_response(&error, call.errors)?
        }
    };
    // Browsers may call the gateway from any origin (as LiteLLM allows): keys travel in
    // headers, never in cookies.
    let mut lines = format!(
        "x-litellm-call-id\n{call_id}\naccess-control-allow-origin\n*\naccess-control-expose-headers\n{}",
        answer_headers::EXPOSED
    );
    for (name, value) in call.headers.pairs() {
        if value.contains(['\n', '\r']) {
            // Invalid in a header, as `Headers::set` would have said.
            return Err(worker::Error::RustError(format!("the value of {name} holds a line break")));
        }
        lines.push('\n');
        lines.push_str(name);
        lines.push('\n');
        lines.push_str(&value);
    }
    set_headers(&response.headers_mut().0, &lines)?;
    if !call.log_deferred {
        call.log.status = response.status_code();
        write_log(&mut call.log, started_ms);
    }
    Ok(response)
}

#[wasm_bindgen(inline_js = "export function set_headers(headers, lines) {
    const parts = lines.split('\\n');
    for (let i = 1; i < parts.length; i += 2) headers.set(parts[i - 1], parts[i]);
}")]
extern "C" {
    /// Sets the headers `lines` holds (names and values, each on a line of its own) in one call
    /// from wasm: each `Headers::set` from wasm is a boundary crossing and two strings decoded,
    /// and an answer has a dozen headers. A header value never holds a line break.
    #[wasm_bindgen(catch)]
    fn set_headers(headers: &worker::web_sys::Headers, lines: &str) -> std::result::Result<(), JsValue>;
}

/// Writes a request's one log line, with its total time (a stream's, when it ends).
pub fn write_log(log: &mut RequestLog, started_ms: u64) {
    log.total_ms = now_ms().saturating_sub(started_ms);
    console_log!("{}", log.to_line());
}

async fn route(mut req: Request, call: &mut Call<'_>) -> std::result::Result<Response, ApiError> {
    let path = req.path();
    let method = req.method();
    let Some(route) = Endpoint::parse(&path) else {
        drain(&mut req).await;
        return Err(ApiError::not_found(format!("Unknown route {method} {path}")));
    };
    if route.is_anthropic() {
        call.errors = ErrorFormat::Anthropic;
    }
    if method == Method::Options {
        return preflight(route.method(), req.headers().get("access-control-request-headers").ok().flatten());
    }
    if method.as_ref() != route.method() {
        drain(&mut req).await;
        return Err(ApiError::method_not_allowed(method.as_ref(), &path, route.method()));
    }
    match route {
        Endpoint::Liveliness => json_response(200, &serde_json::json!("I'm alive!")),
        Endpoint::Readiness => {
            let models = embedded::config().map_err(ApiError::internal)?.model_names().len();
            let status =
                serde_json::json!({"status": "healthy", "version": env!("CARGO_PKG_VERSION"), "models": models});
            json_response(200, &status)
        }
        Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings => {
            let kind = match route {
                Endpoint::Completions => Kind::Completion,
                Endpoint::Embeddings => Kind::Embedding,
                _ => Kind::Chat,
            };
            let caller = authenticate_or_drain(&mut req, call).await?;
            proxy::proxy(&mut OpenAi::new(kind), req, call, caller).await
        }
        Endpoint::Messages | Endpoint::MessagesCountTokens => {
            let caller = authenticate_or_drain(&mut req, call).await?;
            messages::serve(&route, req, call, caller).await
        }
        Endpoint::Responses => {
            let caller = authenticate_or_drain(&mut req, call).await?;
            proxy::proxy(&mut Responses::new(now_ms() / 1000), req, call, caller).await
        }
        Endpoint::Models => {
            let caller = authenticate_or_drain(&mut req, call).await?;
            json_response(200, &openai::model_list(visible_models(&caller)?.iter().map(String::as_str)))
        }
        Endpoint::Model(id) => {
            let caller = authenticate_or_drain(&mut req, call).await?;
            if !visible_models(&caller)?.contains(&id) {
                let message = format!("The model `{id}` does not exist. Call `/v1/models` to view available models.");
                return Err(ApiError::not_found(message).with_param("model"));
            }
            json_response(200, &openai::model_object(&id))
        }
        Endpoint::Health => {
            let caller = authenticate_or_drain(&mut req, call).await?;
            if !matches!(caller, Caller::Master) {
                return Err(ApiError::forbidden("Only the master key may run /health."));
            }
            json_response(200, &health::health(call).await?)
        }
        Endpoint::ModelInfo => {
            let caller = authenticate_or_drain(&mut req, call).await?;
            json_response(200, &health::model_info(call, &caller).await?)
        }
        Endpoint::ModelGroupInfo => {
            let caller = authenticate_or_drain(&mut req, call).await?;
            let only = endpoints::query_param(&req.inner().url(), "model_group");
            json_response(200, &health::model_group_info(&caller, only.as_deref())?)
        }
        Endpoint::SpendLogs => {
            let caller = authenticate_or_drain(&mut req, call).await?;
            json_response(200, &spend::logs(&req, call, &caller).await?)
        }
        Endpoint::GlobalSpendReport | Endpoint::GlobalSpendKeys | Endpoint::GlobalSpendModels | Endpoint::SpendTags => {
            let caller = authenticate_or_drain(&mut req, call).await?;
            json_response(200, &reports::serve(&route, &req, call, &caller).await?)
        }
        Endpoint::Metrics => metrics::serve(&req, call).await,
        Endpoint::Party(kind, op) => {
            let caller = authenticate_or_drain(&mut req, call).await?;
            let answer = parties::handle(kind, op, req, call, caller).await?;
            json_response(200, &answer)
        }
        key_route => {
            let caller = authenticate_or_drain(&mut req, call).await?;
            let answer = admin::handle(key_route, req, call, caller).await?;
            json_response(200, &answer)
        }
    }
}

/// The model names a caller may use: all for the master key, a key's allowed ones and aliases.
fn visible_models(caller: &Caller) -> std::result::Result<Vec<String>, ApiError> {
    let config = embedded::config().map_err(ApiError::internal)?;
    let names = config.model_names();
    let visible = match caller {
        Caller::Master => names,
        Caller::Key(record) => record.visible_models(&names, &config.access_groups),
    };
    Ok(visible.into_iter().map(str::to_string).collect())
}

/// Identifies the caller from any of the accepted key headers. The master key is compared in
/// constant time; any other key is looked up by its hash in KV.
async fn authenticate(req: &Request, call: &mut Call<'_>) -> std::result::Result<Caller, ApiError> {
    let presented = auth::presented_key(|name| req.headers().get(name).ok().flatten()).ok_or_else(|| {
        ApiError::unauthorized(
            "No API key provided. Send it as `Authorization: Bearer <key>` or in the `x-litellm-api-key` header.",
        )
    })?;
    let config = embedded::config().map_err(ApiError::internal)?;
    // No master key: nobody can manage keys, and an open gateway would spend the Databricks
    // budget for anyone, so every request is refused (keys left in KV included).
    let Some(master) = &config.master_key else {
        return Err(ApiError::unauthorized(
            "This gateway has no master key (general_settings.master_key), so it refuses every request.",
        ));
    };
    let master = vars::resolve(call.env, master)?;
    if auth::constant_time_eq(presented.as_bytes(), master.expose().as_bytes()) {
        return Ok(Caller::Master);
    }
    let hash = keys::hash_key(&presented);
    call.log.key_hash = Some(hash[..16].to_string());
    let store = KeyStore::open(call.env)?;
    let revocation = match store.lookup(&hash).await? {
        Lookup::Key(record) => {
            call.log.key_alias = record.key_alias.clone();
            record.check_usable(now_ms())?;
            return Ok(Caller::Key(record));
        }
        Lookup::Unknown(revocation) => revocation,
    };
    Err(match revocation {
        Some(r) => refusals::key_revoked(&r.reason, Some(r.at)),
        None => ApiError::unauthorized("Invalid API key."),
    })
}

/// Identifies the caller; a refused caller's request body is read to its end first (see `drain`).
async fn authenticate_or_drain(req: &mut Request, call: &mut Call<'_>) -> std::result::Result<Caller, ApiError> {
    let caller = authenticate(req, call).await;
    if caller.is_err() {
        drain(req).await;
    }
    caller
}

/// Reads and drops what is left of a request body before refusing the request. Left unread,
/// it can cost the client its connection: with a router worker in front (the static assets'
/// router, under `wrangler dev` and Miniflare) workerd then closes the connection, and the
/// client's next request on it fails. Bounded: a larger body is left to that fate.
pub(crate) async fn drain(req: &mut Request) {
    if req.inner().body().is_none() {
        return;
    }
    if let Ok(mut body) = req.stream() {
        let mut read = 0;
        while let Some(Ok(chunk)) = body.next().await {
            read += chunk.len();
            if read > MAX_BODY_BYTES {
                break;
            }
        }
    }
}

/// Reads a request body, refusing one over Databricks' payload limit. An oversized body
/// announced by its length is drained, not kept: a client still uploading would otherwise
/// see its connection reset instead of the 413. A body without a length (chunked) is read
/// chunk by chunk and refused at the limit, without reading the rest.
pub async fn read_body(req: &mut Request) -> std::result::Result<Vec<u8>, ApiError> {
    let cannot_read =
        |e: worker::Error| ApiError::invalid_request(format!("Cannot read the request body: {e}"), "request_body");
    let announced = req.headers().get("content-length").ok().flatten().and_then(|v| v.trim().parse::<usize>().ok());
    let Some(len) = announced else {
        if req.inner().body().is_none() {
            return Ok(Vec::new());
        }
        let mut body = BoundedBody::default();
        let mut chunks = req.stream().map_err(cannot_read)?;
        while let Some(chunk) = chunks.next().await {
            body.push(&chunk.map_err(cannot_read)?)?;
        }
        return Ok(body.into_bytes());
    };
    if len > MAX_BODY_BYTES {
        if let Ok(mut body) = req.stream() {
            while let Some(Ok(_)) = body.next().await {}
        }
        return Err(ApiError::too_large(len));
    }
    let bytes = req.bytes().await.map_err(cannot_read)?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large(bytes.len()));
    }
    Ok(bytes)
}

/// A CORS preflight for a known route: its method, and whatever headers the browser asks to
/// send (the OpenAI SDKs add their own `x-stainless-*` ones).
fn preflight(method: &str, requested_headers: Option<String>) -> std::result::Result<Response, ApiError> {
    let headers = Headers::new();
    let set = |name: &str, value: &str| headers.set(name, value).map_err(runtime_error);
    set("access-control-allow-methods", &format!("{method}, OPTIONS"))?;
    let allowed = requested_headers
        .unwrap_or_else(|| "authorization, content-type, x-litellm-api-key, api-key, x-api-key".into());
    set("access-control-allow-headers", &allowed)?;
    set("access-control-max-age", "86400")?;
    Ok(Response::empty().map_err(runtime_error)?.with_status(204).with_headers(headers))
}

pub fn json_response(status: u16, body: &serde_json::Value) -> std::result::Result<Response, ApiError> {
    bytes_response(status, body.to_string().into_bytes())
}

pub fn bytes_response(status: u16, body: Vec<u8>) -> std::result::Result<Response, ApiError> {
    let headers = Headers::new();
    headers.set("content-type", "application/json").map_err(runtime_error)?;
    Response::from_bytes(body).map(|r| r.with_status(status).with_headers(headers)).map_err(runtime_error)
}

fn error_response(error: &ApiError, format: ErrorFormat) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if let Some(seconds) = error.retry_after_s {
        headers.set("retry-after", &seconds.to_string())?;
    }
    if error.retries_spent {
        headers.set("x-should-retry", "false")?;
    }
    let (status, body) = format.render(error);
    Ok(Response::from_bytes(body)?.with_status(status).with_headers(headers))
}

pub fn unknown_model(model: &str) -> ApiError {
    ApiError::new(
        400,
        ErrorKind::UnknownModel,
        format!("Invalid model name passed in model={model}. Call `/v1/models` to view available models for your key."),
    )
    .with_param("model")
}

/// A failure of the Workers runtime itself: a 500 for the caller, the detail in the log.
pub fn runtime_error(e: worker::Error) -> ApiError {
    worker::console_error!("runtime error: {e}");
    ApiError::internal("The gateway's runtime failed; see the worker's log.")
}
