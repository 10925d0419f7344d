//! The thin layer between the Workers runtime and the pure modules: the fetch entry, the
//! route table, who the caller is, and the rendering of every answer (headers, errors, log).

mod accounting;
mod admin;
mod credentials;
mod dispatch;
mod header_lines;
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
use worker::{console_log, event, web_sys, Context, Env, Headers, Method, Request, Response, Result};

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
use header_lines::HeaderLines;
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

/// An answer as a handler makes it. A body the gateway wrote is built into the runtime's
/// `Response` once, with all its headers, in one call from wasm (`respond`); worker's
/// `Response` builds two `Headers` objects, sets each header from wasm and builds a
/// `ResponseInit`, a `Uint8Array` and the `Response` call by call. Streams, preflights and the
/// metrics text stay worker's.
pub enum Reply {
    Body { status: u16, content_type: &'static str, body: Vec<u8>, headers: Vec<(&'static str, String)> },
    Built(Response),
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Reply::Built(response)
    }
}

/// The incoming request is taken as the runtime's own `Request`: worker's conversion reads its
/// method, URL, headers and `cf` (parsed from JSON and frozen by the runtime) into wasm. Routes
/// that take worker's `Request` get one (`route`); the proxied ones read what they need.
#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> Result<web_sys::Response> {
    // A test build holds several configs: the instance's var says which one it runs.
    #[cfg(feature = "test-configs")]
    embedded::select(|| env.var("GATEWAY_TEST_CONFIG").ok().map(|v| v.to_string()));
    let started_ms = now_ms();
    let call_id = ids::uuid_v4().unwrap_or_else(|_| "00000000-0000-0000-0000-000000000000".into());
    let url = req.url();
    let method = Method::from(req.method());
    let log = RequestLog {
        call_id: call_id.clone(),
        method: method.to_string(),
        route: endpoints::loggable_path(endpoints::url_path(&url)),
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

    let reply = match route(req, &url, method, &mut call).await {
        Ok(reply) => reply,
        Err(error) => {
            call.log.error_type = Some(error.kind.as_str());
            error_reply(&error, call.errors)
        }
    };
    // Browsers may call the gateway from any origin (as LiteLLM allows): keys travel in
    // headers, never in cookies.
    let mut lines = HeaderLines::default();
    let mut push = |name: &str, value: &str| lines.push(name, value).map_err(worker::Error::RustError);
    push("x-litellm-call-id", &call_id)?;
    push("access-control-allow-origin", "*")?;
    push("access-control-expose-headers", answer_headers::EXPOSED)?;
    for (name, value) in call.headers.pairs() {
        push(name, &value)?;
    }
    let (response, status) = match reply {
        Reply::Body { status, content_type, body, headers } => {
            push("content-type", content_type)?;
            for (name, value) in headers {
                push(name, &value)?;
            }
            (header_lines::respond(status, &body, lines.as_str())?, status)
        }
        Reply::Built(mut response) => {
            header_lines::set_headers(&response.headers_mut().0, lines.as_str())?;
            let status = response.status_code();
            (web_sys::Response::from(response), status)
        }
    };
    if !call.log_deferred {
        call.log.status = status;
        write_log(&mut call.log, started_ms);
    }
    Ok(response)
}

/// Writes a request's one log line, with its total time (a stream's, when it ends).
pub fn write_log(log: &mut RequestLog, started_ms: u64) {
    log.total_ms = now_ms().saturating_sub(started_ms);
    console_log!("{}", log.to_line());
}

async fn route(
    raw: web_sys::Request,
    url: &str,
    method: Method,
    call: &mut Call<'_>,
) -> std::result::Result<Reply, ApiError> {
    let path = endpoints::url_path(url);
    let Some(route) = Endpoint::parse(path) else {
        drain(&raw).await;
        return Err(ApiError::not_found(format!("Unknown route {method} {path}")));
    };
    if route.is_anthropic() {
        call.errors = ErrorFormat::Anthropic;
    }
    if method == Method::Options {
        return preflight(route.method(), raw.headers().get("access-control-request-headers").ok().flatten());
    }
    if method.as_ref() != route.method() {
        drain(&raw).await;
        return Err(ApiError::method_not_allowed(method.as_ref(), path, route.method()));
    }
    match route {
        Endpoint::Liveliness => return Ok(json_response(200, &serde_json::json!("I'm alive!"))),
        Endpoint::Readiness => {
            let models = embedded::config().map_err(ApiError::internal)?.model_names().len();
            let status =
                serde_json::json!({"status": "healthy", "version": env!("CARGO_PKG_VERSION"), "models": models});
            return Ok(json_response(200, &status));
        }
        // The scrape token or the master key, never a virtual key (`metrics::authorize`).
        Endpoint::Metrics => return metrics::serve(&raw, call).await.map(Reply::from),
        _ => {}
    }
    // Every other route serves a caller, identified first.
    let caller = authenticate_or_drain(&raw, call).await?;
    // The proxied routes read the runtime's request themselves; the others take worker's.
    match route {
        Endpoint::ChatCompletions => return proxy::proxy(&mut OpenAi::new(Kind::Chat), raw, call, caller).await,
        Endpoint::Completions => return proxy::proxy(&mut OpenAi::new(Kind::Completion), raw, call, caller).await,
        Endpoint::Embeddings => return proxy::proxy(&mut OpenAi::new(Kind::Embedding), raw, call, caller).await,
        Endpoint::Messages | Endpoint::MessagesCountTokens => {
            return messages::serve(&route, raw, call, caller).await;
        }
        Endpoint::Responses => {
            return proxy::proxy(&mut Responses::new(now_ms() / 1000), raw, call, caller).await;
        }
        _ => {}
    }
    let req = Request::from(raw);
    let answer = match route {
        Endpoint::Models => openai::model_list(visible_models(&caller)?.iter().map(String::as_str)),
        Endpoint::Model(id) => {
            if !visible_models(&caller)?.contains(&id) {
                let message = format!("The model `{id}` does not exist. Call `/v1/models` to view available models.");
                return Err(ApiError::not_found(message).with_param("model"));
            }
            openai::model_object(&id)
        }
        Endpoint::Health => {
            if !matches!(caller, Caller::Master) {
                return Err(ApiError::forbidden("Only the master key may run /health."));
            }
            health::health(call).await?
        }
        Endpoint::ModelInfo => health::model_info(call, &caller).await?,
        Endpoint::ModelGroupInfo => {
            let only = endpoints::query_param(url, "model_group");
            health::model_group_info(&caller, only.as_deref())?
        }
        Endpoint::SpendLogs => spend::logs(&req, call, &caller).await?,
        Endpoint::GlobalSpendReport | Endpoint::GlobalSpendKeys | Endpoint::GlobalSpendModels | Endpoint::SpendTags => {
            reports::serve(&route, &req, call, &caller).await?
        }
        Endpoint::Party(kind, op) => parties::handle(kind, op, req, call, caller).await?,
        key_route => admin::handle(key_route, req, call, caller).await?,
    };
    Ok(json_response(200, &answer))
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

/// The key a request presents in any of the accepted key headers (`auth::presented_key`).
pub fn presented_key(req: &web_sys::Request) -> Option<String> {
    let headers = req.headers();
    auth::presented_key(|name| headers.get(name).ok().flatten())
}

/// Identifies the caller from any of the accepted key headers. The master key is compared in
/// constant time; any other key is looked up by its hash in KV.
async fn authenticate(req: &web_sys::Request, call: &mut Call<'_>) -> std::result::Result<Caller, ApiError> {
    let presented = presented_key(req).ok_or_else(|| {
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
async fn authenticate_or_drain(req: &web_sys::Request, call: &mut Call<'_>) -> std::result::Result<Caller, ApiError> {
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
pub(crate) async fn drain(req: &web_sys::Request) {
    let Some(mut body) = upstream::byte_stream_of(req.body()) else { return };
    let mut read = 0;
    while let Some(Ok(chunk)) = body.next().await {
        read += chunk.len();
        if read > MAX_BODY_BYTES {
            break;
        }
    }
}

/// Reads a request body, refusing one over Databricks' payload limit. An oversized body
/// announced by its length is drained, not kept: a client still uploading would otherwise
/// see its connection reset instead of the 413. A body without a length (chunked) is read
/// chunk by chunk and refused at the limit, without reading the rest.
pub async fn read_body(req: &web_sys::Request) -> std::result::Result<Vec<u8>, ApiError> {
    let cannot_read =
        |e: worker::Error| ApiError::invalid_request(format!("Cannot read the request body: {e}"), "request_body");
    let announced = req.headers().get("content-length").ok().flatten().and_then(|v| v.trim().parse::<usize>().ok());
    let Some(len) = announced else {
        let Some(mut chunks) = upstream::byte_stream_of(req.body()) else { return Ok(Vec::new()) };
        let mut body = BoundedBody::default();
        while let Some(chunk) = chunks.next().await {
            body.push(&chunk.map_err(cannot_read)?)?;
        }
        return Ok(body.into_bytes());
    };
    if len > MAX_BODY_BYTES {
        if let Some(mut body) = upstream::byte_stream_of(req.body()) {
            while let Some(Ok(_)) = body.next().await {}
        }
        return Err(ApiError::too_large(len));
    }
    let buffer = req.array_buffer().map_err(worker::Error::from).map_err(cannot_read)?;
    let bytes = upstream::buffer_bytes(buffer).await.map_err(cannot_read)?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large(bytes.len()));
    }
    Ok(bytes)
}

/// A CORS preflight for a known route: its method, and whatever headers the browser asks to
/// send (the OpenAI SDKs add their own `x-stainless-*` ones).
fn preflight(method: &str, requested_headers: Option<String>) -> std::result::Result<Reply, ApiError> {
    let headers = Headers::new();
    let set = |name: &str, value: &str| headers.set(name, value).map_err(runtime_error);
    set("access-control-allow-methods", &format!("{method}, OPTIONS"))?;
    let allowed = requested_headers
        .unwrap_or_else(|| "authorization, content-type, x-litellm-api-key, api-key, x-api-key".into());
    set("access-control-allow-headers", &allowed)?;
    set("access-control-max-age", "86400")?;
    Ok(Response::empty().map_err(runtime_error)?.with_status(204).with_headers(headers).into())
}

pub fn json_response(status: u16, body: &serde_json::Value) -> Reply {
    bytes_response(status, body.to_string().into_bytes())
}

/// A JSON answer.
pub fn bytes_response(status: u16, body: Vec<u8>) -> Reply {
    Reply::Body { status, content_type: "application/json", body, headers: Vec::new() }
}

fn error_reply(error: &ApiError, format: ErrorFormat) -> Reply {
    let mut headers = Vec::new();
    if let Some(seconds) = error.retry_after_s {
        headers.push(("retry-after", seconds.to_string()));
    }
    if error.retries_spent {
        headers.push(("x-should-retry", "false".to_string()));
    }
    let (status, body) = format.render(error);
    Reply::Body { status, content_type: "application/json", body, headers }
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
