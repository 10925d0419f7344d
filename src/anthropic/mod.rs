//! Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) as Claude Code
//! and the Anthropic SDKs speak it, served two ways:
//!
//! - **native**, on Claude deployments: the body goes to `{api_base}/anthropic/v1/messages`
//!   with `model` = the endpoint ([`native_body`]); the answer and the stream come back in
//!   Anthropic's shape and pass through ([`native_answer`], [`NativeStreamRelay`]), their usage
//!   read on the way.
//! - **translated**, on every other deployment: the request becomes a chat completions body
//!   ([`to_chat_body`]) that then takes the chat path (`databricks::prepare_body`), and the chat
//!   answer or stream becomes a Message again ([`translated_answer`], [`TranslatedStreamRelay`]).
//!
//! [`prepare_upstream`] does either for one attempt on one deployment. Errors stay the gateway's
//! one [`ApiError`] until the edge, where [`error_json`] renders them in Anthropic's envelope
//! (`{"type":"error","error":{"type","message"}}`) so that the SDKs raise their typed errors.
//! Pure logic throughout: nothing here needs the Workers runtime.

mod native_stream;
mod request;
mod translate;
mod translated_stream;
mod wire;

use serde_json::{json, Map, Value};

use crate::openai::{ApiError, ErrorKind, Kind};

pub use native_stream::NativeStreamRelay;
pub use request::{
    count_tokens, native_body, parse_count_tokens, parse_request, prompt_tally, MessagesRequest, ThinkingMode,
};
pub use translate::{from_chat_answer, to_chat_body, translated_answer, ChatTranslation};
pub use translated_stream::TranslatedStreamRelay;
pub use wire::Messages;

/// The route, under the serving-endpoints base, of Databricks' native Messages API.
pub const NATIVE_ROUTE: &str = "anthropic/v1/messages";

/// Whether a deployment's endpoint takes the Messages API natively: Databricks serves it for
/// Claude endpoints only (databricks.md); every other family is translated.
pub fn serves_natively(endpoint: &str) -> bool {
    endpoint.to_ascii_lowercase().contains("claude")
}

/// How a request reaches one deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `{api_base}/anthropic/v1/messages`, Anthropic in and out.
    Native,
    /// `{api_base}/chat/completions`, translated both ways.
    Translated,
}

/// One attempt's upstream request: where it goes and what it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Upstream {
    pub format: Format,
    /// The route under the serving-endpoints base (for `databricks::url`).
    pub route: &'static str,
    pub body: Map<String, Value>,
    /// Request fields a translation could not carry (hints such as `context_management`).
    pub dropped: Vec<String>,
}

/// The body for one attempt on `endpoint`, native or translated (each attempt prepares its own:
/// a fallback to another family gets its own translation). `output_cap` is a `max_tokens` a
/// budget imposed. Refuses what the translation cannot carry (server tools, URL documents).
pub fn prepare_upstream(req: &MessagesRequest, endpoint: &str, output_cap: Option<u64>) -> Result<Upstream, ApiError> {
    if serves_natively(endpoint) {
        let body = native_body(req, endpoint, output_cap);
        return Ok(Upstream { format: Format::Native, route: NATIVE_ROUTE, body, dropped: Vec::new() });
    }
    let ChatTranslation { mut body, dropped } = to_chat_body(req, output_cap)?;
    crate::databricks::prepare_body(Kind::Chat, &mut body, endpoint, req.stream, output_cap);
    Ok(Upstream { format: Format::Translated, route: Kind::Chat.route(), body, dropped })
}

// ------------------------------------------------------------------------------ errors

/// Anthropic's `error.type` for a gateway error.
pub fn error_type(e: &ApiError) -> &'static str {
    match (e.kind, e.status) {
        // A valid key that may not use the model: Anthropic's permission error, where LiteLLM's
        // OpenAI envelope says 401.
        (ErrorKind::KeyModelAccessDenied, _) => "permission_error",
        // A model the gateway does not serve: Anthropic's answer for an unknown model, which
        // Claude Code explains as such (LiteLLM's OpenAI envelope says 400).
        (ErrorKind::UnknownModel, _) => "not_found_error",
        (_, 401) => "authentication_error",
        (_, 403) => "permission_error",
        (_, 404) => "not_found_error",
        (_, 413) => "request_too_large",
        (_, 429) => "rate_limit_error",
        (_, 503 | 529) => "overloaded_error",
        (_, 504) => "timeout_error",
        (_, 400..=499) => "invalid_request_error",
        _ => "api_error",
    }
}

/// The status an error is answered with on the Messages routes: the gateway's own, but for a
/// key refused a model (403, as [`error_type`] says). The SDKs pick their error class by status.
pub fn error_status(e: &ApiError) -> u16 {
    match e.kind {
        ErrorKind::KeyModelAccessDenied => 403,
        ErrorKind::UnknownModel => 404,
        _ => e.status,
    }
}

/// `{"type":"error","error":{"type","message"}}`.
pub fn error_json(e: &ApiError) -> Value {
    json!({"type": "error", "error": {"type": error_type(e), "message": e.message}})
}

/// The error as one named server-sent event, for failures after a stream has started (the SDKs
/// raise it as an `APIError`).
pub fn error_event(e: &ApiError) -> String {
    event("error", &error_json(e).to_string())
}

/// One named event, framed for the client. The Anthropic SDKs dispatch on the `event:` name.
pub(crate) fn event(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

// ------------------------------------------------------------------------------ usage

/// Token counts of one Message, as Anthropic reports them: `input_tokens` excludes the cached
/// prompt tokens, so the whole prompt is input + cache creation + cache read. Settlement prices
/// each of the three at its own rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// Reads Anthropic's `usage` object; `None` when absent or not an object.
    pub fn from_messages(v: Option<&Value>) -> Option<Usage> {
        let mut usage = Usage::default();
        usage.update(v?.as_object()?);
        Some(usage)
    }

    /// Takes the counts an Anthropic `usage` object carries, leaving the others: `message_delta`
    /// carries `output_tokens` (cumulative) and, on newer APIs, the input counts again.
    pub fn update(&mut self, u: &Map<String, Value>) {
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(n) = get("input_tokens") {
            self.input_tokens = n;
        }
        if let Some(n) = get("output_tokens") {
            self.output_tokens = n;
        }
        if let Some(n) = get("cache_creation_input_tokens") {
            self.cache_creation_input_tokens = n;
        }
        if let Some(n) = get("cache_read_input_tokens") {
            self.cache_read_input_tokens = n;
        }
    }

    /// Reads a chat completions `usage` object, whose `prompt_tokens` include the cached tokens
    /// (databricks.md): they are taken out of `input_tokens`, never counted twice. Cache reads
    /// come as Databricks' `cache_read_input_tokens` or OpenAI's
    /// `prompt_tokens_details.cached_tokens` (read by `openai::Usage::from_value`).
    pub fn from_chat(v: Option<&Value>) -> Option<Usage> {
        crate::openai::Usage::from_value(v).map(Usage::from_openai)
    }

    /// The Anthropic counts of the gateway's usage (whose prompt includes the cached tokens).
    pub fn from_openai(u: crate::openai::Usage) -> Usage {
        Usage {
            input_tokens: u.prompt_tokens.saturating_sub(u.cache_creation_tokens).saturating_sub(u.cache_read_tokens),
            output_tokens: u.completion_tokens,
            cache_creation_input_tokens: u.cache_creation_tokens,
            cache_read_input_tokens: u.cache_read_tokens,
        }
    }

    /// Every prompt token, cached or not.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.cache_creation_input_tokens).saturating_add(self.cache_read_input_tokens)
    }

    /// The counts the gateway's limits, prices and logs take: the prompt is every prompt token,
    /// of which the cache reads and writes are told apart (priced at their own rates).
    pub fn to_chat(&self) -> crate::openai::Usage {
        let prompt_tokens = self.prompt_tokens();
        crate::openai::Usage {
            prompt_tokens,
            completion_tokens: self.output_tokens,
            total_tokens: prompt_tokens.saturating_add(self.output_tokens),
            cache_read_tokens: self.cache_read_input_tokens,
            cache_creation_tokens: self.cache_creation_input_tokens,
        }
    }

    /// Anthropic's `usage` object.
    pub fn to_json(&self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens,
        })
    }
}

/// A Message ready for the client, with what settlement needs.
#[derive(Debug)]
pub struct MessagesAnswer {
    pub bytes: Vec<u8>,
    pub usage: Option<Usage>,
    /// The Message's id (`msg_...`).
    pub id: Option<String>,
}

/// A native answer from `{api_base}/anthropic/v1/messages`, passed on with the requested model
/// name (Databricks names its served model, as on the chat route) and its usage read.
pub fn native_answer(body: &[u8], model_group: &str) -> Result<MessagesAnswer, ApiError> {
    let mut answer = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(answer)) => answer,
        _ => return Err(ApiError::bad_gateway("Databricks returned a malformed Message (not a JSON object)")),
    };
    if !answer.get("content").is_some_and(Value::is_array) {
        return Err(ApiError::bad_gateway("Databricks returned a malformed Message (no content)"));
    }
    answer.insert("model".into(), Value::String(model_group.to_string()));
    let usage = Usage::from_messages(answer.get("usage"));
    let id = answer.get("id").and_then(Value::as_str).map(str::to_string);
    let bytes = crate::json::map_to_vec(&answer);
    Ok(MessagesAnswer { bytes, usage, id })
}

/// A Message id from an upstream id (`chatcmpl_<uuid>` → `msg_<uuid>`), so that a log line and
/// the answer name the same call.
pub(crate) fn message_id(upstream: Option<&str>) -> String {
    let rest = upstream
        .map(|id| id.trim_start_matches("chatcmpl").trim_start_matches(['_', '-']))
        .filter(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    match rest {
        Some(rest) => format!("msg_{rest}"),
        None => format!("msg_{}", crate::ids::uuid_v4().unwrap_or_default().replace('-', "")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_in_anthropics_envelope_with_its_types() {
        let cases = [
            (ApiError::invalid_request("bad", "messages"), 400, "invalid_request_error"),
            (ApiError::unauthorized("no key"), 401, "authentication_error"),
            (ApiError::forbidden("no"), 403, "permission_error"),
            (ApiError::new(401, ErrorKind::KeyModelAccessDenied, "not this model"), 403, "permission_error"),
            (ApiError::not_found("none"), 404, "not_found_error"),
            (ApiError::new(400, ErrorKind::UnknownModel, "no such model").with_param("model"), 404, "not_found_error"),
            (ApiError::too_large(5_000_000), 413, "request_too_large"),
            (ApiError::new(429, ErrorKind::RateLimit, "slow down"), 429, "rate_limit_error"),
            (ApiError::new(400, ErrorKind::BudgetExceeded, "Budget has been exceeded!"), 400, "invalid_request_error"),
            (ApiError::method_not_allowed("GET", "/v1/messages", "POST"), 405, "invalid_request_error"),
            (ApiError::internal("boom"), 500, "api_error"),
            (ApiError::bad_gateway("bad"), 502, "api_error"),
            (ApiError::new(503, ErrorKind::Api, "busy"), 503, "overloaded_error"),
            (ApiError::new(529, ErrorKind::Api, "Overloaded"), 529, "overloaded_error"),
            (ApiError::gateway_timeout("slow"), 504, "timeout_error"),
        ];
        for (e, status, kind) in cases {
            assert_eq!(error_status(&e), status, "{e:?}");
            assert_eq!(error_json(&e), json!({"type": "error", "error": {"type": kind, "message": e.message}}));
        }
        let event = error_event(&ApiError::bad_gateway("cut"));
        assert_eq!(
            event,
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"cut\"}}\n\n"
        );
    }

    #[test]
    fn chat_usage_never_counts_cached_tokens_twice() {
        let chat = json!({"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
                          "cache_creation_input_tokens": 60, "cache_read_input_tokens": 30});
        let u = Usage::from_chat(Some(&chat)).unwrap();
        assert_eq!(
            u,
            Usage { input_tokens: 10, output_tokens: 7, cache_creation_input_tokens: 60, cache_read_input_tokens: 30 }
        );
        assert_eq!(u.prompt_tokens(), 100);
        assert_eq!(
            u.to_chat(),
            crate::openai::Usage {
                prompt_tokens: 100,
                completion_tokens: 7,
                total_tokens: 107,
                cache_read_tokens: 30,
                cache_creation_tokens: 60
            }
        );
        let openai =
            json!({"prompt_tokens": 50, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 40}});
        let u = Usage::from_chat(Some(&openai)).unwrap();
        assert_eq!((u.input_tokens, u.cache_read_input_tokens), (10, 40));
        assert_eq!(Usage::from_chat(Some(&json!(null))), None);
        assert_eq!(Usage::from_chat(None), None);
    }

    #[test]
    fn messages_usage_is_read_and_updated() {
        let mut u = Usage::from_messages(Some(&json!({"input_tokens": 5, "cache_read_input_tokens": 90,
            "cache_creation_input_tokens": null, "output_tokens": 1})))
        .unwrap();
        u.update(json!({"output_tokens": 12}).as_object().unwrap());
        assert_eq!(
            u,
            Usage { input_tokens: 5, output_tokens: 12, cache_creation_input_tokens: 0, cache_read_input_tokens: 90 }
        );
        assert_eq!(u.prompt_tokens(), 95);
        assert_eq!(
            u.to_json(),
            json!({"input_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 90, "output_tokens": 12})
        );
    }

    #[test]
    fn native_answers_get_the_requested_model() {
        let raw = br#"{"id":"msg_01","type":"message","role":"assistant","model":"served","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1,"cache_creation_input_tokens":0,"cache_read_input_tokens":8}}"#;
        let a = native_answer(raw, "claude").unwrap();
        let v: Value = serde_json::from_slice(&a.bytes).unwrap();
        assert_eq!(v["model"], "claude");
        assert_eq!(v["content"][0]["text"], "Hi");
        assert_eq!(a.id.as_deref(), Some("msg_01"));
        assert_eq!(a.usage.map(|u| u.prompt_tokens()), Some(11));
        for bad in [&b"[]"[..], b"{\"id\":\"x\"}", b"{\"content\": ["] {
            assert_eq!(native_answer(bad, "m").unwrap_err().status, 502);
        }
    }

    #[test]
    fn message_ids_follow_the_upstream_id() {
        assert_eq!(message_id(Some("chatcmpl_3f78f09a-489c")), "msg_3f78f09a-489c");
        assert_eq!(message_id(Some("chatcmpl-abc")), "msg_abc");
        let fresh = message_id(None);
        assert!(fresh.starts_with("msg_") && fresh.len() == 36, "{fresh}");
        assert!(message_id(Some("weird id!")).starts_with("msg_"));
        assert_ne!(message_id(Some("weird id!")), "msg_weird id!");
    }

    #[test]
    fn each_attempt_is_prepared_for_its_deployment() {
        let req = parse_request(
            br#"{"model":"agent","max_tokens":8000,"stream":true,"thinking":{"type":"enabled","budget_tokens":4000},
                 "messages":[{"role":"user","content":"hi"}],"context_management":{"edits":[]}}"#,
        )
        .unwrap();
        let native = prepare_upstream(&req, "databricks-claude-sonnet-4-5", Some(5000)).unwrap();
        assert_eq!((native.format, native.route), (Format::Native, "anthropic/v1/messages"));
        assert_eq!(native.body["model"], "databricks-claude-sonnet-4-5");
        assert_eq!(native.body["max_tokens"], 5000);
        assert_eq!(native.body["context_management"], json!({"edits": []}));
        assert!(!native.body.contains_key("stream_options"));
        let translated = prepare_upstream(&req, "databricks-gpt-5-1", Some(5000)).unwrap();
        assert_eq!((translated.format, translated.route), (Format::Translated, "chat/completions"));
        assert_eq!(translated.body["model"], "databricks-gpt-5-1");
        assert_eq!(translated.body["max_tokens"], 5000);
        assert_eq!(translated.body["reasoning_effort"], "high");
        assert_eq!(translated.body["stream_options"], json!({"include_usage": true}));
        assert_eq!(translated.dropped, ["context_management"]);
        let server_tool = parse_request(
            br#"{"model":"agent","max_tokens":10,"messages":[{"role":"user","content":"hi"}],
                 "tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
        )
        .unwrap();
        assert!(prepare_upstream(&server_tool, "databricks-claude-haiku-4-5", None).is_ok());
        assert_eq!(
            prepare_upstream(&server_tool, "databricks-meta-llama-3-3-70b-instruct", None).unwrap_err().status,
            400
        );
    }

    #[test]
    fn a_translated_tool_loop_round_trips() {
        // Turn 1: the model calls a tool, through chat.
        let first = parse_request(
            br#"{"model":"agent","max_tokens":100,"tools":[{"name":"get_weather","input_schema":{"type":"object"}}],
                 "messages":[{"role":"user","content":"Weather in Paris?"}]}"#,
        )
        .unwrap();
        let chat = json!({"id": "chatcmpl_1", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null, "tool_calls": [
                {"id": "call_77", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 8}});
        let answer: Value = serde_json::from_slice(&from_chat_answer(&chat, "agent", &first).unwrap().bytes).unwrap();
        // Turn 2: the client sends the answer back with the tool's result, as the SDKs do.
        let mut next = first.body.clone();
        let messages = next["messages"].as_array_mut().unwrap();
        messages.push(json!({"role": "assistant", "content": answer["content"]}));
        messages.push(json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": answer["content"][0]["id"], "content": "18C"}]}));
        let second = parse_request(Value::Object(next).to_string().as_bytes()).unwrap();
        let body = to_chat_body(&second, None).unwrap().body;
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_77", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_77", "content": "18C"}
            ])
        );
    }

    #[test]
    fn claude_endpoints_are_native() {
        assert!(serves_natively("databricks-claude-sonnet-4-5"));
        assert!(serves_natively("my-Claude-proxy"));
        assert!(!serves_natively("databricks-gpt-5-1"));
        assert!(!serves_natively("databricks-meta-llama-3-3-70b-instruct"));
    }
}
