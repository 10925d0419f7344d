//! A Messages request: parsed and checked once, kept whole (fields the gateway does not know
//! pass on to native deployments unchanged), and what it weighs as a prompt.

use serde_json::{json, Map, Value};

use crate::openai::{self, ApiError, Kind};
use crate::prompt::PromptTally;

/// Claude's smallest thinking budget.
const MIN_THINKING_BUDGET: u64 = 1024;

/// The `thinking` a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThinkingMode {
    Off,
    Enabled {
        budget_tokens: u64,
    },
    /// The model decides how much to think (newer Claude models).
    Adaptive,
}

/// A Messages (or count_tokens) request that passed validation.
#[derive(Clone, Debug, PartialEq)]
pub struct MessagesRequest {
    pub model: String,
    pub stream: bool,
    /// Required on `/v1/messages`; count_tokens requests have none.
    pub max_tokens: Option<u64>,
    pub thinking: ThinkingMode,
    pub body: Map<String, Value>,
}

impl MessagesRequest {
    /// Whether the client asked to see the model's thinking.
    pub fn shows_thinking(&self) -> bool {
        self.thinking != ThinkingMode::Off
    }

    /// The client's `stop_sequences`.
    pub fn stop_sequences(&self) -> impl Iterator<Item = &str> {
        self.body.get("stop_sequences").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
    }
}

/// Parses and validates a `/v1/messages` body.
pub fn parse_request(bytes: &[u8]) -> Result<MessagesRequest, ApiError> {
    parse(bytes, true)
}

/// Parses and validates a `/v1/messages/count_tokens` body (no `max_tokens`, never streamed).
pub fn parse_count_tokens(bytes: &[u8]) -> Result<MessagesRequest, ApiError> {
    let mut req = parse(bytes, false)?;
    req.stream = false;
    Ok(req)
}

fn parse(bytes: &[u8], needs_max_tokens: bool) -> Result<MessagesRequest, ApiError> {
    let body = openai::parse_object(bytes)?;
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(invalid("`model` is a required field", "model"))
        }
        Some(_) => return Err(invalid("`model` must be a string", "model")),
    };
    let max_tokens = match body.get("max_tokens") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => n.as_u64(),
        None | Some(Value::Null) if !needs_max_tokens => None,
        None | Some(Value::Null) => return Err(invalid("`max_tokens` is a required field", "max_tokens")),
        Some(_) => return Err(invalid("`max_tokens` must be a positive integer", "max_tokens")),
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("`stream` must be a boolean", "stream")),
    };
    check_messages(body.get("messages"))?;
    check_system(body.get("system"))?;
    check_number(&body, "temperature", 0.0, 1.0)?;
    check_number(&body, "top_p", 0.0, 1.0)?;
    match body.get("top_k") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64().is_some() => {}
        Some(_) => return Err(invalid("`top_k` must be a non-negative integer", "top_k")),
    }
    match body.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => return Err(invalid("`stop_sequences` must be a list of strings", "stop_sequences")),
    }
    match body.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.get("user_id").is_none_or(|u| u.is_string() || u.is_null()) => {}
        Some(Value::Object(_)) => {
            return Err(invalid("`metadata.user_id` must be a string", "metadata.user_id"));
        }
        Some(_) => return Err(invalid("`metadata` must be an object", "metadata")),
    }
    check_tools(body.get("tools"))?;
    check_tool_choice(body.get("tool_choice"))?;
    let thinking = thinking_mode(body.get("thinking"))?;
    Ok(MessagesRequest { model, stream, max_tokens, thinking, body })
}

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid_request(message, param)
}

fn check_number(body: &Map<String, Value>, field: &str, min: f64, max: f64) -> Result<(), ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|x| (min..=max).contains(&x)) => Ok(()),
        Some(_) => Err(invalid(format!("`{field}` must be a number between {min} and {max}"), field)),
    }
}

fn check_messages(messages: Option<&Value>) -> Result<(), ApiError> {
    let messages = match messages {
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(invalid("`messages` must contain at least one message", "messages"))
        }
        Some(Value::Array(m)) => m,
        None | Some(Value::Null) => return Err(invalid("`messages` is a required field", "messages")),
        Some(_) => return Err(invalid("`messages` must be a list of messages", "messages")),
    };
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Some(message) = message.as_object() else {
            return Err(invalid(format!("`{at}` must be an object"), &at));
        };
        // System messages among the others (text only) are Anthropic's newer form, which
        // Claude Code sends to models it does not know.
        let role = match message.get("role").and_then(Value::as_str) {
            Some(role @ ("user" | "assistant" | "system")) => role,
            _ => {
                return Err(invalid(
                    format!("`{at}.role` must be \"user\", \"assistant\" or \"system\""),
                    &format!("{at}.role"),
                ))
            }
        };
        if role == "system" {
            if !message.get("content").is_some_and(|c| c.is_string() || c.is_array()) {
                let message = format!("`{at}.content` must be a string or a list of text blocks");
                return Err(invalid(message, &format!("{at}.content")));
            }
            check_system(message.get("content")).map_err(|e| {
                let param = e.param.as_deref().unwrap_or("system").replacen("system", &format!("{at}.content"), 1);
                invalid(e.message.replacen("`system", &format!("`{at}.content"), 1), &param)
            })?;
            continue;
        }
        match message.get("content") {
            Some(Value::String(_)) => {}
            Some(Value::Array(blocks)) => {
                for (j, block) in blocks.iter().enumerate() {
                    check_block(block, role, &format!("{at}.content[{j}]"))?;
                }
            }
            _ => {
                return Err(invalid(
                    format!("`{at}.content` must be a string or a list of content blocks"),
                    &format!("{at}.content"),
                ))
            }
        }
    }
    Ok(())
}

fn check_system(system: Option<&Value>) -> Result<(), ApiError> {
    match system {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (j, block) in blocks.iter().enumerate() {
                let at = format!("system[{j}]");
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(invalid(format!("`{at}` must be a text block"), &at));
                }
                check_block(block, "system", &at)?;
            }
            Ok(())
        }
        Some(_) => Err(invalid("`system` must be a string or a list of text blocks", "system")),
    }
}

/// Checks the blocks the gateway translates or reads; other types pass on to Claude, which
/// judges them (a translation refuses them, see `translate`).
fn check_block(block: &Value, role: &str, at: &str) -> Result<(), ApiError> {
    let Some(fields) = block.as_object() else {
        return Err(invalid(format!("`{at}` must be a content block object"), at));
    };
    let Some(kind) = fields.get("type").and_then(Value::as_str) else {
        return Err(invalid(format!("`{at}.type` is required and must be a string"), &format!("{at}.type")));
    };
    let string = |field: &str| -> Result<&str, ApiError> {
        fields.get(field).and_then(Value::as_str).ok_or_else(|| {
            invalid(format!("`{at}.{field}` is required and must be a string"), &format!("{at}.{field}"))
        })
    };
    let only_in = |wanted: &str| -> Result<(), ApiError> {
        if role == wanted {
            Ok(())
        } else {
            Err(invalid(format!("`{at}`: {kind} blocks may only appear in {wanted} messages"), at))
        }
    };
    match kind {
        "text" => {
            let text = string("text")?;
            if text.is_empty() {
                return Err(invalid(format!("`{at}`: text content blocks must be non-empty"), &format!("{at}.text")));
            }
        }
        "image" | "document" => {
            only_in("user")?;
            check_source(fields.get("source"), kind, &format!("{at}.source"))?;
        }
        "tool_use" => {
            only_in("assistant")?;
            string("id")?;
            string("name")?;
            if !fields.get("input").is_some_and(Value::is_object) {
                return Err(invalid(format!("`{at}.input` must be an object"), &format!("{at}.input")));
            }
        }
        "tool_result" => {
            only_in("user")?;
            string("tool_use_id")?;
            match fields.get("content") {
                None | Some(Value::Null) | Some(Value::String(_)) => {}
                Some(Value::Array(inner)) => {
                    for (k, b) in inner.iter().enumerate() {
                        check_block(b, "user", &format!("{at}.content[{k}]"))?;
                    }
                }
                Some(_) => {
                    return Err(invalid(
                        format!("`{at}.content` must be a string or a list of content blocks"),
                        &format!("{at}.content"),
                    ))
                }
            }
            if fields.get("is_error").is_some_and(|e| !e.is_boolean() && !e.is_null()) {
                return Err(invalid(format!("`{at}.is_error` must be a boolean"), &format!("{at}.is_error")));
            }
        }
        "thinking" => {
            only_in("assistant")?;
            string("thinking")?;
            string("signature")?;
        }
        "redacted_thinking" => {
            only_in("assistant")?;
            string("data")?;
        }
        _ => {}
    }
    match fields.get("cache_control") {
        None | Some(Value::Null) => Ok(()),
        Some(c) if c.get("type").and_then(Value::as_str) == Some("ephemeral") => Ok(()),
        Some(_) => Err(invalid(
            format!("`{at}.cache_control` must be {{\"type\": \"ephemeral\"}}"),
            &format!("{at}.cache_control"),
        )),
    }
}

fn check_source(source: Option<&Value>, kind: &str, at: &str) -> Result<(), ApiError> {
    let Some(source) = source.and_then(Value::as_object) else {
        return Err(invalid(format!("`{at}` is required and must be an object"), at));
    };
    let string = |field: &str| source.get(field).and_then(Value::as_str);
    let ok = match string("type") {
        Some("base64") => string("media_type").is_some() && string("data").is_some(),
        Some("url") => string("url").is_some(),
        Some("file") => string("file_id").is_some(),
        Some("text") if kind == "document" => string("data").is_some(),
        Some("content") if kind == "document" => source.get("content").is_some_and(|c| c.is_string() || c.is_array()),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!(
                "`{at}` must be a {kind} source: {{\"type\": \"base64\", \"media_type\", \"data\"}}, {{\"type\": \"url\", \"url\"}}{}",
                if kind == "document" { ", a text or a content source" } else { "" }
            ),
            at,
        ))
    }
}

fn check_tools(tools: Option<&Value>) -> Result<(), ApiError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("`tools` must be a list of tools", "tools")),
    };
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        if !tool.get("name").is_some_and(Value::is_string) {
            return Err(invalid(format!("`{at}.name` is required and must be a string"), &format!("{at}.name")));
        }
        // A custom tool (no type, or "custom") brings its schema; Anthropic's own tools do not.
        let custom = tool.get("type").is_none_or(|t| t.is_null() || t.as_str() == Some("custom"));
        if custom && !tool.get("input_schema").is_some_and(Value::is_object) {
            return Err(invalid(
                format!("`{at}.input_schema` is required and must be an object"),
                &format!("{at}.input_schema"),
            ));
        }
    }
    Ok(())
}

fn check_tool_choice(choice: Option<&Value>) -> Result<(), ApiError> {
    let Some(choice) = choice.filter(|c| !c.is_null()) else { return Ok(()) };
    match choice.get("type").and_then(Value::as_str) {
        Some("auto" | "any" | "none") => Ok(()),
        Some("tool") if choice.get("name").is_some_and(Value::is_string) => Ok(()),
        Some("tool") => Err(invalid("`tool_choice.name` is required with type \"tool\"", "tool_choice.name")),
        _ => Err(invalid("`tool_choice.type` must be \"auto\", \"any\", \"tool\" or \"none\"", "tool_choice.type")),
    }
}

fn thinking_mode(thinking: Option<&Value>) -> Result<ThinkingMode, ApiError> {
    let Some(thinking) = thinking.filter(|t| !t.is_null()) else { return Ok(ThinkingMode::Off) };
    match thinking.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(ThinkingMode::Off),
        Some("adaptive") => Ok(ThinkingMode::Adaptive),
        Some("enabled") => match thinking.get("budget_tokens").and_then(Value::as_u64) {
            Some(budget_tokens) if budget_tokens >= MIN_THINKING_BUDGET => Ok(ThinkingMode::Enabled { budget_tokens }),
            _ => Err(invalid(
                format!("`thinking.budget_tokens` must be an integer of at least {MIN_THINKING_BUDGET}"),
                "thinking.budget_tokens",
            )),
        },
        _ => Err(invalid("`thinking.type` must be \"enabled\", \"disabled\" or \"adaptive\"", "thinking.type")),
    }
}

/// The body for `{api_base}/anthropic/v1/messages` on `endpoint`: the client's, with `model`
/// = the endpoint and `max_tokens` lowered to `output_cap`, a `max_tokens` a budget imposed. A
/// thinking budget that no longer fits under it (Claude requires `budget_tokens <
/// max_tokens`) shrinks to fit, or is left out when Claude's smallest budget does not fit.
pub fn native_body(req: &MessagesRequest, endpoint: &str, output_cap: Option<u64>) -> Map<String, Value> {
    let mut body = req.body.clone();
    body.insert("model".into(), Value::String(endpoint.to_string()));
    let (Some(cap), Some(asked)) = (output_cap, req.max_tokens) else { return body };
    if cap >= asked {
        return body;
    }
    body.insert("max_tokens".into(), cap.into());
    if let ThinkingMode::Enabled { budget_tokens } = req.thinking {
        if budget_tokens >= cap {
            if cap > MIN_THINKING_BUDGET {
                body.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": cap - 1}));
            } else {
                body.remove("thinking");
            }
        }
    }
    body
}

/// What of the request becomes prompt tokens, counted on its chat translation: the same
/// measure as a chat request's, for limits and budget holds on either path.
pub fn prompt_tally(req: &MessagesRequest) -> PromptTally {
    let body = super::translate::chat_body_for_tally(req);
    PromptTally::of(Kind::Chat, &body)
}

/// The answer of `/v1/messages/count_tokens`: the gateway's estimate of the prompt (Databricks
/// has no such route), about four characters a token as for rate limits.
pub fn count_tokens(req: &MessagesRequest) -> Value {
    json!({"input_tokens": prompt_tally(req).estimate()})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_value(v: Value) -> Result<MessagesRequest, ApiError> {
        parse_request(v.to_string().as_bytes())
    }

    fn minimal() -> Value {
        json!({"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = minimal();
        v[field] = value;
        v
    }

    fn message(content: Value) -> Value {
        with("messages", json!([{"role": "user", "content": content}]))
    }

    #[test]
    fn a_realistic_request_is_kept_whole() {
        let body = json!({
            "model": "claude-sonnet", "max_tokens": 32000, "stream": true,
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Look", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "enc"},
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}], "is_error": false}]},
                {"role": "system", "content": [{"type": "text", "text": "Reminder.", "cache_control": {"type": "ephemeral"}}]}],
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}},
                      {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 31999},
            "temperature": 1, "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"}, "context_management": {"edits": []}
        });
        let r = parse_value(body.clone()).unwrap();
        assert_eq!(r.model, "claude-sonnet");
        assert!(r.stream);
        assert_eq!(r.max_tokens, Some(32000));
        assert_eq!(r.thinking, ThinkingMode::Enabled { budget_tokens: 31999 });
        assert_eq!(Value::Object(r.body.clone()), body);
        assert_eq!(r.stop_sequences().collect::<Vec<_>>(), ["END"]);
    }

    #[test]
    fn bad_requests_are_refused_naming_the_field() {
        let cases = [
            (json!([1]), "request_body"),
            (json!({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}), "model"),
            (with("model", json!(3)), "model"),
            (with("max_tokens", json!(null)), "max_tokens"),
            (with("max_tokens", json!(0)), "max_tokens"),
            (with("max_tokens", json!("10")), "max_tokens"),
            (with("messages", json!(null)), "messages"),
            (with("messages", json!([])), "messages"),
            (with("messages", json!("hi")), "messages"),
            (with("messages", json!([7])), "messages[0]"),
            (with("messages", json!([{"role": "system", "content": 5}])), "messages[0].content"),
            (with("messages", json!([{"role": "system"}])), "messages[0].content"),
            (with("messages", json!([{"role": "system", "content": [{"type": "image"}]}])), "messages[0].content[0]"),
            (with("messages", json!([{"role": "tool", "content": "x"}])), "messages[0].role"),
            (with("messages", json!([{"role": "user"}])), "messages[0].content"),
            (message(json!([{"text": "x"}])), "messages[0].content[0].type"),
            (message(json!([{"type": "text", "text": ""}])), "messages[0].content[0].text"),
            (message(json!([{"type": "text"}])), "messages[0].content[0].text"),
            (
                message(json!([{"type": "image", "source": {"type": "base64", "data": "x"}}])),
                "messages[0].content[0].source",
            ),
            (message(json!([{"type": "image"}])), "messages[0].content[0].source"),
            (message(json!([{"type": "tool_use", "id": "t", "name": "f", "input": {}}])), "messages[0].content[0]"),
            (message(json!([{"type": "tool_result", "content": "x"}])), "messages[0].content[0].tool_use_id"),
            (
                message(json!([{"type": "tool_result", "tool_use_id": "t", "content": 5}])),
                "messages[0].content[0].content",
            ),
            (
                message(
                    json!([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": ""}]}]),
                ),
                "messages[0].content[0].content[0].text",
            ),
            (message(json!([{"type": "thinking", "thinking": "x", "signature": "s"}])), "messages[0].content[0]"),
            (
                message(json!([{"type": "text", "text": "x", "cache_control": {"type": "forever"}}])),
                "messages[0].content[0].cache_control",
            ),
            (
                with(
                    "messages",
                    json!([{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}]),
                ),
                "messages[0].content[0].input",
            ),
            (
                with("messages", json!([{"role": "assistant", "content": [{"type": "thinking", "thinking": "x"}]}])),
                "messages[0].content[0].signature",
            ),
            (with("system", json!(5)), "system"),
            (with("system", json!([{"type": "image"}])), "system[0]"),
            (with("system", json!([{"type": "text", "text": ""}])), "system[0].text"),
            (with("stream", json!("yes")), "stream"),
            (with("temperature", json!(1.5)), "temperature"),
            (with("top_p", json!(-0.1)), "top_p"),
            (with("top_k", json!(1.5)), "top_k"),
            (with("stop_sequences", json!("END")), "stop_sequences"),
            (with("metadata", json!("u")), "metadata"),
            (with("metadata", json!({"user_id": 3})), "metadata.user_id"),
            (with("tools", json!({})), "tools"),
            (with("tools", json!([{"input_schema": {}}])), "tools[0].name"),
            (with("tools", json!([{"name": "f"}])), "tools[0].input_schema"),
            (with("tool_choice", json!({"type": "required"})), "tool_choice.type"),
            (with("tool_choice", json!({"type": "tool"})), "tool_choice.name"),
            (with("thinking", json!({"type": "enabled", "budget_tokens": 100})), "thinking.budget_tokens"),
            (with("thinking", json!({"type": "enabled"})), "thinking.budget_tokens"),
            (with("thinking", json!({"type": "on"})), "thinking.type"),
        ];
        for (body, param) in cases {
            let e = parse_value(body.clone()).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{body}: {}", e.message);
            assert_eq!(super::super::error_type(&e), "invalid_request_error");
        }
    }

    #[test]
    fn count_tokens_needs_no_max_tokens_and_answers_an_estimate() {
        let body = json!({"model": "claude", "system": "Be brief.", "messages": [{"role": "user", "content": "Hello there, how are you?"}]});
        assert_eq!(parse_request(body.to_string().as_bytes()).unwrap_err().param.as_deref(), Some("max_tokens"));
        let r = parse_count_tokens(body.to_string().as_bytes()).unwrap();
        assert_eq!(r.max_tokens, None);
        // (9 + 25 chars) / 4 → 9, + 3 per message (system and user) + 3 for the request.
        assert_eq!(count_tokens(&r), json!({"input_tokens": 9 + 6 + 3}));
        // Tools and images weigh in too.
        let mut with_tools = body.clone();
        with_tools["tools"] = json!([{"name": "f", "description": "A function", "input_schema": {"type": "object"}}]);
        let heavier = count_tokens(&parse_count_tokens(with_tools.to_string().as_bytes()).unwrap());
        assert!(heavier["input_tokens"].as_u64().unwrap() > 18);
    }

    #[test]
    fn the_native_body_names_the_endpoint_and_keeps_the_rest() {
        let r = parse_value(with("context_management", json!({"edits": []}))).unwrap();
        let body = native_body(&r, "databricks-claude-sonnet-4-5", None);
        assert_eq!(body["model"], "databricks-claude-sonnet-4-5");
        assert_eq!(body["max_tokens"], 100);
        assert_eq!(body["context_management"], json!({"edits": []}));
        // A cap above the ask changes nothing.
        assert_eq!(native_body(&r, "e", Some(500))["max_tokens"], 100);
        assert_eq!(native_body(&r, "e", Some(60))["max_tokens"], 60);
    }

    #[test]
    fn an_imposed_cap_shrinks_the_thinking_budget_or_leaves_it_out() {
        let mut v = with("thinking", json!({"type": "enabled", "budget_tokens": 4000}));
        v["max_tokens"] = json!(8000);
        let r = parse_value(v).unwrap();
        assert_eq!(native_body(&r, "e", None)["thinking"]["budget_tokens"], 4000);
        assert_eq!(native_body(&r, "e", Some(6000))["thinking"]["budget_tokens"], 4000);
        let capped = native_body(&r, "e", Some(3000));
        assert_eq!(
            (capped["max_tokens"].as_u64(), capped["thinking"]["budget_tokens"].as_u64()),
            (Some(3000), Some(2999))
        );
        let tiny = native_body(&r, "e", Some(1024));
        assert_eq!(tiny["max_tokens"], 1024);
        assert!(!tiny.contains_key("thinking"));
    }
}
