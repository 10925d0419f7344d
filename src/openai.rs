//! OpenAI's wire format as the gateway's clients speak it: the one error envelope every
//! failure is rendered in, and the parsing and validation of request bodies.

use serde_json::{json, Map, Value};

use crate::tokens::TokenInput;

/// Databricks' own payload limit for foundation-model endpoints; larger bodies are refused here.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Token counts of one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every prompt token, cached ones included (OpenAI's meaning).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Prompt tokens read from the prompt cache (OpenAI's `prompt_tokens_details.cached_tokens`,
    /// Anthropic's `cache_read_input_tokens`).
    pub cache_read_tokens: u64,
    /// Prompt tokens written to the prompt cache (Anthropic's `cache_creation_input_tokens`).
    pub cache_creation_tokens: u64,
}

impl Usage {
    /// Reads an OpenAI `usage` object; `None` when absent or not an object. Cache tokens come
    /// from Databricks' Claude fields (`cache_read_input_tokens`, `cache_creation_input_tokens`)
    /// or OpenAI's `prompt_tokens_details.cached_tokens`: the same tokens, counted once, and
    /// never more than the prompt they are part of.
    pub fn from_value(v: Option<&Value>) -> Option<Usage> {
        let u = v?.as_object()?;
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        let (prompt_tokens, completion_tokens) =
            (get("prompt_tokens").unwrap_or(0), get("completion_tokens").unwrap_or(0));
        let total_tokens = get("total_tokens").unwrap_or_else(|| prompt_tokens.saturating_add(completion_tokens));
        let cached = u.get("prompt_tokens_details").and_then(|d| d.get("cached_tokens")).and_then(Value::as_u64);
        let cache_read_tokens = get("cache_read_input_tokens").or(cached).unwrap_or(0).min(prompt_tokens);
        let cache_creation_tokens =
            get("cache_creation_input_tokens").unwrap_or(0).min(prompt_tokens - cache_read_tokens);
        Some(Usage { prompt_tokens, completion_tokens, total_tokens, cache_read_tokens, cache_creation_tokens })
    }

    /// A usage without cache tokens.
    pub fn plain(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            ..Usage::default()
        }
    }
}

/// The category of an error, rendered as OpenAI's `error.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    RateLimit,
    /// A virtual key asked for a model outside its `models` (LiteLLM's type, with 401).
    KeyModelAccessDenied,
    /// The model named is not served (an `invalid_request_error` with 400, as LiteLLM).
    UnknownModel,
    /// A key's `max_budget` cannot pay for the request (LiteLLM's type, with 400).
    BudgetExceeded,
    /// The upstream or the gateway failed; not the caller's fault.
    Api,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::UnknownModel => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RateLimit => "rate_limit_exceeded",
            ErrorKind::KeyModelAccessDenied => "key_model_access_denied",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::Api => "api_error",
        }
    }

    /// The kind that goes with an HTTP status, for errors that only have a status.
    pub fn for_status(status: u16) -> ErrorKind {
        match status {
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Permission,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::RateLimit,
            400..=499 => ErrorKind::InvalidRequest,
            _ => ErrorKind::Api,
        }
    }
}

/// The one error type that reaches the HTTP edge. Rendered as
/// `{"error":{"message","type","param","code"}}` with `code` the status as a string (as LiteLLM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub kind: ErrorKind,
    pub message: String,
    pub param: Option<String>,
    /// Seconds a client should wait before retrying, sent as `retry-after`.
    pub retry_after_s: Option<u64>,
    /// The gateway's own retries and fallbacks are spent: the client is told not to retry
    /// (`x-should-retry: false`, which the OpenAI SDKs honour), or one call would cost
    /// (client retries + 1) × (gateway attempts) upstream calls.
    pub retries_spent: bool,
}

impl ApiError {
    pub fn new(status: u16, kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError { status, kind, message: message.into(), param: None, retry_after_s: None, retries_spent: false }
    }

    /// Marks the error as the last word after the gateway's own retries (see `retries_spent`).
    pub fn after_retries(mut self) -> Self {
        self.retries_spent = true;
        self
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub fn invalid_request(message: impl Into<String>, param: &str) -> Self {
        ApiError::new(400, ErrorKind::InvalidRequest, message).with_param(param)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(401, ErrorKind::Authentication, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, ErrorKind::Permission, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(404, ErrorKind::NotFound, message)
    }

    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> Self {
        ApiError::new(
            405,
            ErrorKind::InvalidRequest,
            format!("Method {method} is not allowed on {path}; use {allowed}"),
        )
    }

    pub fn too_large(len: usize) -> Self {
        ApiError::new(
            413,
            ErrorKind::InvalidRequest,
            format!("Request body is {len} bytes; the limit is {MAX_BODY_BYTES} bytes (Databricks' payload limit)"),
        )
        .with_param("request_body")
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        ApiError::new(502, ErrorKind::Api, message)
    }

    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        ApiError::new(504, ErrorKind::Api, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, ErrorKind::Api, message)
    }

    pub fn to_json(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind.as_str(),
            "param": self.param,
            "code": self.status.to_string(),
        }})
    }

    /// The error as one server-sent event, for failures after a stream has started.
    pub fn to_sse_event(&self) -> String {
        format!("data: {}\n\n", self.to_json())
    }
}

/// The three OpenAI endpoints the gateway proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
    Embedding,
}

impl Kind {
    /// The route, under the serving-endpoints base, that Databricks answers it on.
    pub fn route(self) -> &'static str {
        match self {
            Kind::Chat => "chat/completions",
            Kind::Completion => "completions",
            Kind::Embedding => "embeddings",
        }
    }
}

/// A request that passed validation. The body is kept whole so that fields the gateway does
/// not know pass through to Databricks unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyRequest {
    pub kind: Kind,
    pub model: String,
    pub stream: bool,
    pub body: Map<String, Value>,
    /// Embeddings asked as base64 (`encoding_format`): Databricks answers floats, the gateway
    /// encodes them.
    pub base64: bool,
    /// The client asked for usage in its stream (`stream_options.include_usage`). The gateway
    /// always asks Databricks for it (accounting needs it) but shows it only when asked.
    pub include_usage: bool,
}

/// Parses and validates a body for `kind`.
pub fn parse_request(kind: Kind, bytes: &[u8]) -> Result<ProxyRequest, ApiError> {
    match kind {
        Kind::Chat => parse_chat_request(bytes),
        Kind::Completion => parse_completion_request(bytes),
        Kind::Embedding => parse_embedding_request(bytes),
    }
}

/// Parses and validates a `/chat/completions` body.
pub fn parse_chat_request(bytes: &[u8]) -> Result<ProxyRequest, ApiError> {
    let body = parse_object(bytes)?;
    let model = required_model(&body)?;
    match body.get("messages") {
        Some(Value::Array(messages)) if messages.is_empty() => {
            return Err(ApiError::invalid_request("`messages` must contain at least one message", "messages"))
        }
        Some(Value::Array(messages)) => {
            for (i, m) in messages.iter().enumerate() {
                match m.get("role") {
                    Some(Value::String(_)) => {}
                    _ if !m.is_object() => {
                        return Err(ApiError::invalid_request(
                            format!("`messages[{i}]` must be an object"),
                            &format!("messages[{i}]"),
                        ))
                    }
                    _ => {
                        return Err(ApiError::invalid_request(
                            format!("`messages[{i}].role` is required and must be a string"),
                            &format!("messages[{i}].role"),
                        ))
                    }
                }
            }
        }
        Some(_) => return Err(ApiError::invalid_request("`messages` must be an array of messages", "messages")),
        None => return Err(ApiError::invalid_request("`messages` is a required field", "messages")),
    }
    let stream = optional_bool(&body, "stream")?;
    check_positive_integers(&body, &["max_tokens", "max_completion_tokens", "n"])?;
    let include_usage = include_usage(&body)?;
    Ok(ProxyRequest { kind: Kind::Chat, model, stream, body, base64: false, include_usage })
}

/// `stream_options.include_usage`, false when absent.
fn include_usage(body: &Map<String, Value>) -> Result<bool, ApiError> {
    match body.get("stream_options") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Object(options)) => match options.get("include_usage") {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::invalid_request(
                "`stream_options.include_usage` must be a boolean",
                "stream_options.include_usage",
            )),
        },
        Some(_) => Err(ApiError::invalid_request("`stream_options` must be an object", "stream_options")),
    }
}

fn check_positive_integers(body: &Map<String, Value>, fields: &[&str]) -> Result<(), ApiError> {
    for field in fields {
        match body.get(*field) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => {}
            Some(_) => return Err(ApiError::invalid_request(format!("`{field}` must be a positive integer"), field)),
        }
    }
    Ok(())
}

/// Parses and validates a legacy `/completions` body: `prompt` is text or a list of texts.
pub fn parse_completion_request(bytes: &[u8]) -> Result<ProxyRequest, ApiError> {
    let body = parse_object(bytes)?;
    let model = required_model(&body)?;
    texts(body.get("prompt"), "prompt")?;
    let stream = optional_bool(&body, "stream")?;
    check_positive_integers(&body, &["max_tokens", "n", "best_of"])?;
    let include_usage = include_usage(&body)?;
    Ok(ProxyRequest { kind: Kind::Completion, model, stream, body, base64: false, include_usage })
}

/// Parses and validates an `/embeddings` body: `input` is text, a list of texts, or token ids
/// (decoded to text before forwarding, see `tokens`), and `encoding_format` is `float` or
/// `base64`.
pub fn parse_embedding_request(bytes: &[u8]) -> Result<ProxyRequest, ApiError> {
    let mut body = parse_object(bytes)?;
    let model = required_model(&body)?;
    if TokenInput::from_body(&body)?.is_none() {
        texts(body.get("input"), "input")?;
    }
    let base64 = match body.remove("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return Err(ApiError::invalid_request(
                "`encoding_format` must be \"float\" or \"base64\"",
                "encoding_format",
            ))
        }
    };
    if body.get("stream").is_some_and(|s| s.as_bool() == Some(true)) {
        return Err(ApiError::invalid_request("Embeddings cannot be streamed", "stream"));
    }
    Ok(ProxyRequest { kind: Kind::Embedding, model, stream: false, body, base64, include_usage: false })
}

/// A text or a non-empty list of texts. Token arrays are refused here: Databricks takes text
/// only (embeddings decode theirs before, see `tokens`).
fn texts(value: Option<&Value>, field: &str) -> Result<(), ApiError> {
    let token_arrays = || {
        ApiError::invalid_request(
            format!("`{field}` as token ids is not supported by Databricks; send the text instead"),
            field,
        )
    };
    match value {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(ApiError::invalid_request(format!("`{field}` must not be an empty list"), field))
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(()),
        Some(Value::Array(items)) if items.iter().all(|i| i.is_number() || i.is_array()) => Err(token_arrays()),
        Some(Value::Array(_)) => Err(ApiError::invalid_request(format!("`{field}` must be a list of strings"), field)),
        None | Some(Value::Null) => Err(ApiError::invalid_request(format!("`{field}` is a required field"), field)),
        Some(_) => Err(ApiError::invalid_request(format!("`{field}` must be a string or a list of strings"), field)),
    }
}

pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(body)) => Ok(body),
        Ok(_) => Err(ApiError::invalid_request("The request body must be a JSON object", "request_body")),
        Err(e) => Err(ApiError::invalid_request(format!("The request body is not valid JSON: {e}"), "request_body")),
    }
}

fn required_model(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(ApiError::invalid_request("`model` is a required field", "model"))
        }
        Some(_) => Err(ApiError::invalid_request("`model` must be a string", "model")),
    }
}

fn optional_bool(body: &Map<String, Value>, field: &str) -> Result<bool, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid_request(format!("`{field}` must be a boolean"), field)),
    }
}

/// OpenAI's model list for `GET /v1/models`.
pub fn model_list<'a>(names: impl IntoIterator<Item = &'a str>) -> Value {
    let data: Vec<Value> = names.into_iter().map(model_object).collect();
    json!({"object": "list", "data": data})
}

pub fn model_object(name: &str) -> Value {
    json!({"id": name, "object": "model", "created": 0, "owned_by": "databricks"})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(body: &str) -> ApiError {
        parse_chat_request(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_valid_request_keeps_every_field() {
        let r = parse_chat_request(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"foo":{"bar":1}}"#,
        )
        .unwrap();
        assert_eq!(r.model, "m");
        assert!(r.stream);
        assert_eq!(r.body["foo"]["bar"], 1);
    }

    #[test]
    fn malformed_bodies_get_400_naming_the_param() {
        let cases = [
            ("{not json", "request_body"),
            ("[1,2]", "request_body"),
            ("", "request_body"),
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (r#"{"model":7,"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (r#"{"model":"m"}"#, "messages"),
            (r#"{"model":"m","messages":"hi"}"#, "messages"),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (r#"{"model":"m","messages":[3]}"#, "messages[0]"),
            (r#"{"model":"m","messages":[{"content":"x"}]}"#, "messages[0].role"),
            (r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#, "stream"),
            (r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":-1}"#, "max_tokens"),
            (r#"{"model":"m","messages":[{"role":"user"}],"max_completion_tokens":1.5}"#, "max_completion_tokens"),
            (r#"{"model":"m","messages":[{"role":"user"}],"n":0}"#, "n"),
            (r#"{"model":"m","messages":[{"role":"user"}],"n":"2"}"#, "n"),
        ];
        for (body, param) in cases {
            let e = error_of(body);
            assert_eq!((e.status, e.kind), (400, ErrorKind::InvalidRequest), "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
    }

    #[test]
    fn completions_and_embeddings_take_text_only() {
        let ok = parse_request(Kind::Completion, br#"{"model":"m","prompt":["a","b"],"stream":true}"#).unwrap();
        assert!(ok.stream);
        let e = parse_request(Kind::Embedding, br#"{"model":"m","input":"x","encoding_format":"base64"}"#).unwrap();
        assert!(e.base64);
        assert!(!e.body.contains_key("encoding_format"), "never forwarded: the gateway encodes");
        let cases = [
            (Kind::Completion, r#"{"model":"m"}"#, "prompt"),
            (Kind::Completion, r#"{"model":"m","prompt":[1,2,3]}"#, "prompt"),
            (Kind::Embedding, r#"{"model":"m","input":[[1,2],[]]}"#, "input"),
            (Kind::Embedding, r#"{"model":"m","input":[1,-2]}"#, "input"),
            (Kind::Embedding, r#"{"model":"m","input":[]}"#, "input"),
            (Kind::Embedding, r#"{"model":"m","input":["a",2]}"#, "input"),
            (Kind::Embedding, r#"{"model":"m","input":"a","encoding_format":"int8"}"#, "encoding_format"),
            (Kind::Embedding, r#"{"model":"m","input":"a","stream":true}"#, "stream"),
            (Kind::Embedding, r#"{"input":"a"}"#, "model"),
        ];
        for (kind, body, param) in cases {
            let e = parse_request(kind, body.as_bytes()).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{body}");
        }
        assert!(parse_request(Kind::Completion, br#"{"model":"m","prompt":[1,2]}"#)
            .unwrap_err()
            .message
            .contains("token ids"));
        // Embeddings take token ids: the runtime decodes them to text.
        for input in ["[1,2]", "[[1,2],[3]]"] {
            let body = format!(r#"{{"model":"m","input":{input}}}"#);
            assert!(parse_request(Kind::Embedding, body.as_bytes()).is_ok(), "{input}");
        }
    }

    #[test]
    fn usage_in_streams_only_when_asked() {
        let parse = |extra: &str| {
            parse_chat_request(
                format!(r#"{{"model":"m","messages":[{{"role":"user"}}],"stream":true{extra}}}"#).as_bytes(),
            )
        };
        assert!(!parse("").unwrap().include_usage);
        assert!(!parse(r#","stream_options":{"include_usage":false}"#).unwrap().include_usage);
        assert!(!parse(r#","stream_options":null"#).unwrap().include_usage);
        assert!(parse(r#","stream_options":{"include_usage":true}"#).unwrap().include_usage);
        assert_eq!(parse(r#","stream_options":1"#).unwrap_err().param.as_deref(), Some("stream_options"));
        assert_eq!(
            parse(r#","stream_options":{"include_usage":"yes"}"#).unwrap_err().param.as_deref(),
            Some("stream_options.include_usage")
        );
        let completion =
            parse_request(Kind::Completion, br#"{"model":"m","prompt":"p","stream_options":{"include_usage":true}}"#);
        assert!(completion.unwrap().include_usage);
    }

    #[test]
    fn the_envelope_is_openai_shaped() {
        let v = ApiError::invalid_request("bad", "model").to_json();
        assert_eq!(
            v,
            json!({"error": {"message": "bad", "type": "invalid_request_error", "param": "model", "code": "400"}})
        );
        let v = ApiError::unauthorized("no key").to_json();
        assert_eq!(v["error"]["param"], Value::Null);
        assert_eq!(v["error"]["type"], "authentication_error");
    }

    #[test]
    fn status_maps_to_openai_types() {
        let kinds: Vec<&str> =
            [400, 401, 403, 404, 409, 429, 500, 503].iter().map(|s| ErrorKind::for_status(*s).as_str()).collect();
        assert_eq!(
            kinds,
            [
                "invalid_request_error",
                "authentication_error",
                "permission_error",
                "not_found_error",
                "invalid_request_error",
                "rate_limit_exceeded",
                "api_error",
                "api_error"
            ]
        );
    }
}
