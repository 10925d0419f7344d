//! Messages ⇄ chat completions, for deployments that only speak chat (every family but Claude).
//!
//! Request: `system` becomes a system message; text, images (base64 and URL) and documents
//! become content parts; `tool_use` blocks become `tool_calls` and `tool_result` blocks `tool`
//! messages (placed first, right after the assistant's calls, as chat requires); `thinking`
//! blocks sent back become `thinking_blocks`, which the chat path returns to Databricks as
//! reasoning parts; `thinking` itself goes on as `thinking`, which the chat path maps per family
//! (`reasoning_effort` on GPT). `cache_control` is left out: the families served through chat
//! cache implicitly. What a chat model cannot be asked (Anthropic's own tools, documents by URL
//! or file id, MCP servers) is refused; hints it has no use for are left out and named in
//! `dropped`.
//!
//! Answer: the chat path's normalised answer (content, `thinking_blocks`, `tool_calls`) becomes
//! thinking, text and `tool_use` blocks; `finish_reason` becomes `stop_reason`.

use serde_json::{json, Map, Value};

use super::request::{MessagesRequest, ThinkingMode};
use super::{message_id, MessagesAnswer, Usage};
use crate::openai::ApiError;

/// A chat completions body in the shape a chat client sends (it goes through the chat path's
/// per-endpoint preparation next), and the request fields it could not carry.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatTranslation {
    pub body: Map<String, Value>,
    pub dropped: Vec<String>,
}

/// The longest `metadata.user_id` passed on as chat's `user`.
const MAX_USER_LEN: usize = 64;

/// Top-level fields with a chat equivalent, or read by the translation.
const TRANSLATED: [&str; 16] = [
    "model",
    "messages",
    "system",
    "max_tokens",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "tools",
    "tool_choice",
    "thinking",
    "output_format",
    "output_config",
    "mcp_servers",
];

/// The chat body for `req` on a chat-only deployment. `output_cap` is a `max_tokens` a budget
/// imposed.
pub fn to_chat_body(req: &MessagesRequest, output_cap: Option<u64>) -> Result<ChatTranslation, ApiError> {
    let mut t = Translator { strict: true, dropped: Vec::new(), cache_control: false };
    let body = t.body(req, output_cap)?;
    if t.cache_control {
        t.dropped.push("cache_control".into());
    }
    Ok(ChatTranslation { body, dropped: t.dropped })
}

/// The chat body as far as it can be made, for counting the prompt: what a translation would
/// refuse is counted by its text.
pub(crate) fn chat_body_for_tally(req: &MessagesRequest) -> Map<String, Value> {
    let mut t = Translator { strict: false, dropped: Vec::new(), cache_control: false };
    t.body(req, None).unwrap_or_default()
}

struct Translator {
    /// Refuse what chat cannot carry (else keep its text, for counting).
    strict: bool,
    dropped: Vec<String>,
    cache_control: bool,
}

impl Translator {
    fn body(&mut self, req: &MessagesRequest, output_cap: Option<u64>) -> Result<Map<String, Value>, ApiError> {
        let src = &req.body;
        let mut body = Map::new();
        body.insert("model".into(), Value::String(req.model.clone()));
        let mut messages = Vec::new();
        if let Some(system) = self.system(src.get("system")) {
            messages.push(system);
        }
        for (i, message) in src.get("messages").and_then(Value::as_array).into_iter().flatten().enumerate() {
            self.message(message, i, &mut messages)?;
        }
        body.insert("messages".into(), Value::Array(messages));
        if let Some(max) = req.max_tokens {
            body.insert("max_tokens".into(), output_cap.map_or(max, |cap| cap.min(max)).into());
        }
        if req.stream {
            body.insert("stream".into(), Value::Bool(true));
        }
        for field in ["temperature", "top_p", "top_k"] {
            if let Some(v) = src.get(field).filter(|v| !v.is_null()) {
                body.insert(field.into(), v.clone());
            }
        }
        let stops: Vec<Value> = req.stop_sequences().map(|s| Value::String(s.to_string())).collect();
        if !stops.is_empty() {
            body.insert("stop".into(), Value::Array(stops));
        }
        if let Some(metadata) = src.get("metadata").and_then(Value::as_object) {
            // OpenAI's `user` is a short end-user id; Claude Code's `user_id` is a JSON document
            // of its session, which is left out rather than risk a refusal.
            match metadata.get("user_id").and_then(Value::as_str) {
                Some(user) if user.len() <= MAX_USER_LEN => {
                    body.insert("user".into(), user.into());
                }
                Some(_) => self.dropped.push("metadata.user_id".into()),
                None => {}
            }
        }
        self.tools(src, &mut body)?;
        match req.thinking {
            ThinkingMode::Off => {}
            ThinkingMode::Enabled { budget_tokens } => {
                body.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget_tokens}));
            }
            ThinkingMode::Adaptive => {
                body.insert("reasoning_effort".into(), "medium".into());
            }
        }
        // Anthropic's effort is the same knob as OpenAI's reasoning effort, and wins over what
        // a thinking budget would map to.
        let effort = src.get("output_config").and_then(|c| c.get("effort")).and_then(Value::as_str);
        if let Some(effort @ ("low" | "medium" | "high")) = effort {
            body.insert("reasoning_effort".into(), effort.into());
        }
        self.output_format(src, &mut body);
        if src.get("mcp_servers").is_some_and(|m| m.as_array().is_some_and(|m| !m.is_empty())) {
            self.refuse(
                "`mcp_servers` (remote MCP tools) cannot be used with a model served through chat completions",
                "mcp_servers",
            )?;
        }
        for field in src.keys().filter(|k| !TRANSLATED.contains(&k.as_str())) {
            self.dropped.push(field.clone());
        }
        Ok(body)
    }

    fn refuse(&mut self, message: &str, param: &str) -> Result<(), ApiError> {
        if self.strict {
            Err(ApiError::invalid_request(message, param))
        } else {
            Ok(())
        }
    }

    fn system(&mut self, system: Option<&Value>) -> Option<Value> {
        match system? {
            Value::String(text) if !text.is_empty() => Some(json!({"role": "system", "content": text})),
            Value::Array(blocks) if !blocks.is_empty() => {
                let parts: Vec<Value> = blocks.iter().map(|b| self.text_part(b)).collect();
                Some(json!({"role": "system", "content": collapse(parts)}))
            }
            _ => None,
        }
    }

    fn text_part(&mut self, block: &Value) -> Value {
        self.cache_control |= block.get("cache_control").is_some_and(|c| !c.is_null());
        json!({"type": "text", "text": block.get("text").and_then(Value::as_str).unwrap_or("")})
    }

    fn message(&mut self, message: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), ApiError> {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("user");
        if role == "system" {
            out.extend(self.system(message.get("content")));
            return Ok(());
        }
        let blocks = match message.get("content") {
            Some(Value::String(text)) => {
                out.push(json!({"role": role, "content": text}));
                return Ok(());
            }
            Some(Value::Array(blocks)) => blocks,
            _ => return Ok(()),
        };
        if role == "assistant" {
            out.push(self.assistant(blocks, i)?);
            return Ok(());
        }
        // Tool results first, as `tool` messages right after the assistant's calls; the rest of
        // the turn (and any image a tool returned) follows as one user message.
        let mut parts = Vec::new();
        let mut tool_images = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let at = format!("messages[{i}].content[{j}]");
            self.cache_control |= block.get("cache_control").is_some_and(|c| !c.is_null());
            if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                out.push(self.tool_result(block, &at, &mut tool_images)?);
            } else {
                self.user_part(block, &at, &mut parts)?;
            }
        }
        parts.extend(tool_images);
        if !parts.is_empty() {
            out.push(json!({"role": "user", "content": collapse(parts)}));
        }
        Ok(())
    }

    fn user_part(&mut self, block: &Value, at: &str, parts: &mut Vec<Value>) -> Result<(), ApiError> {
        match block.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => parts.push(self.text_part(block)),
            "image" => match image_url(block.get("source")) {
                Some(url) => parts.push(json!({"type": "image_url", "image_url": {"url": url}})),
                None => {
                    let message =
                        format!("`{at}`: images by file id cannot be sent to a model served through chat completions");
                    self.refuse(&message, at)?;
                    // Counted as an image all the same.
                    parts.push(json!({"type": "image_url", "image_url": {"url": ""}}));
                }
            },
            "document" => self.document(block, at, parts)?,
            other => {
                let message =
                    format!("`{at}`: {other} blocks cannot be sent to a model served through chat completions");
                self.refuse(&message, at)?;
                parts.extend(loose_text(block));
            }
        }
        Ok(())
    }

    fn document(&mut self, block: &Value, at: &str, parts: &mut Vec<Value>) -> Result<(), ApiError> {
        let source = block.get("source").cloned().unwrap_or(Value::Null);
        let title = block.get("title").and_then(Value::as_str).filter(|t| !t.is_empty());
        let titled = |text: &str| match title {
            Some(title) => format!("{title}\n\n{text}"),
            None => text.to_string(),
        };
        match source.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = source.get("data").and_then(Value::as_str).unwrap_or("");
                parts.push(json!({"type": "text", "text": titled(text)}));
            }
            Some("content") => match source.get("content") {
                Some(Value::String(text)) => parts.push(json!({"type": "text", "text": titled(text)})),
                Some(Value::Array(inner)) => {
                    for (k, b) in inner.iter().enumerate() {
                        self.user_part(b, &format!("{at}.source.content[{k}]"), parts)?;
                    }
                }
                _ => {}
            },
            Some("base64") => {
                let media = source.get("media_type").and_then(Value::as_str).unwrap_or("application/pdf");
                let data = source.get("data").and_then(Value::as_str).unwrap_or("");
                let filename = title.unwrap_or("document.pdf");
                parts.push(json!({"type": "file", "file": {"filename": filename, "file_data": format!("data:{media};base64,{data}")}}));
            }
            _ => {
                let message = format!(
                    "`{at}`: documents by URL or file id cannot be sent to a model served through chat completions; send the document's data"
                );
                self.refuse(&message, at)?;
                parts.extend(loose_text(&source));
            }
        }
        Ok(())
    }

    fn tool_result(&mut self, block: &Value, at: &str, images: &mut Vec<Value>) -> Result<Value, ApiError> {
        let id = block.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
        let mut texts: Vec<String> = Vec::new();
        match block.get("content") {
            Some(Value::String(text)) => texts.push(text.clone()),
            Some(Value::Array(inner)) => {
                for (k, b) in inner.iter().enumerate() {
                    let at = format!("{at}.content[{k}]");
                    let mut parts = Vec::new();
                    self.user_part(b, &at, &mut parts)?;
                    for part in parts {
                        match part.get("text").and_then(Value::as_str) {
                            Some(text) if part["type"] == "text" => texts.push(text.to_string()),
                            _ => images.push(part),
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(json!({"role": "tool", "tool_call_id": id, "content": texts.join("\n")}))
    }

    fn assistant(&mut self, blocks: &[Value], i: usize) -> Result<Value, ApiError> {
        let mut text = String::new();
        let mut calls = Vec::new();
        let mut thinking = Vec::new();
        let mut reasoning = String::new();
        for (j, block) in blocks.iter().enumerate() {
            self.cache_control |= block.get("cache_control").is_some_and(|c| !c.is_null());
            match block.get("type").and_then(Value::as_str).unwrap_or("") {
                "text" => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
                "tool_use" => {
                    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                    calls.push(json!({"id": block.get("id"), "type": "function",
                        "function": {"name": block.get("name"), "arguments": input.to_string()}}));
                }
                "thinking" => {
                    let t = block.get("thinking").and_then(Value::as_str).unwrap_or("");
                    reasoning.push_str(t);
                    thinking.push(json!({"type": "thinking", "thinking": t, "signature": block.get("signature")}));
                }
                "redacted_thinking" => thinking.push(json!({"type": "redacted_thinking", "data": block.get("data")})),
                other => {
                    let at = format!("messages[{i}].content[{j}]");
                    let message =
                        format!("`{at}`: {other} blocks cannot be sent to a model served through chat completions");
                    self.refuse(&message, &at)?;
                    if let Some(part) = loose_text(block) {
                        text.push_str(part["text"].as_str().unwrap_or(""));
                    }
                }
            }
        }
        let mut message = Map::new();
        message.insert("role".into(), "assistant".into());
        let content = match (text.is_empty(), calls.is_empty()) {
            (false, _) => Value::String(text),
            (true, false) => Value::Null,
            (true, true) => Value::String(String::new()),
        };
        message.insert("content".into(), content);
        if !calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        if !thinking.is_empty() {
            message.insert("thinking_blocks".into(), Value::Array(thinking));
            if !reasoning.is_empty() {
                message.insert("reasoning_content".into(), Value::String(reasoning));
            }
        }
        Ok(Value::Object(message))
    }

    fn tools(&mut self, src: &Map<String, Value>, body: &mut Map<String, Value>) -> Result<(), ApiError> {
        let mut functions = Vec::new();
        for (i, tool) in src.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
            self.cache_control |= tool.get("cache_control").is_some_and(|c| !c.is_null());
            let name = tool.get("name").cloned().unwrap_or(Value::Null);
            match tool.get("type").and_then(Value::as_str) {
                None | Some("custom") => {
                    let mut function = Map::new();
                    function.insert("name".into(), name);
                    if let Some(d) = tool.get("description").filter(|d| d.is_string()) {
                        function.insert("description".into(), d.clone());
                    }
                    function
                        .insert("parameters".into(), tool.get("input_schema").cloned().unwrap_or_else(|| json!({})));
                    functions.push(json!({"type": "function", "function": function}));
                }
                Some(kind) => {
                    let message = format!(
                        "`tools[{i}]` is Anthropic's {kind} tool, which only Claude runs; a model served through chat completions takes custom tools (name, description, input_schema)"
                    );
                    self.refuse(&message, &format!("tools[{i}]"))?;
                    functions.push(json!({"type": "function", "function": {"name": name, "parameters": {}}}));
                }
            }
        }
        if !functions.is_empty() {
            body.insert("tools".into(), Value::Array(functions));
        }
        let Some(choice) = src.get("tool_choice").filter(|c| c.is_object()) else { return Ok(()) };
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": choice.get("name")}}),
            _ => json!("auto"),
        };
        body.insert("tool_choice".into(), mapped);
        if choice.get("disable_parallel_tool_use").is_some_and(|d| d.as_bool() == Some(true)) {
            self.dropped.push("tool_choice.disable_parallel_tool_use".into());
        }
        Ok(())
    }

    /// Structured output (`output_format`, or `output_config.format`) as `response_format`.
    fn output_format(&mut self, src: &Map<String, Value>, body: &mut Map<String, Value>) {
        let format =
            src.get("output_format").filter(|f| !f.is_null()).or_else(|| src.get("output_config")?.get("format"));
        if let Some(config) = src.get("output_config").and_then(Value::as_object) {
            let carried = |k: &str| k == "format" || (k == "effort" && body.contains_key("reasoning_effort"));
            for key in config.keys().filter(|k| !carried(k)) {
                self.dropped.push(format!("output_config.{key}"));
            }
        }
        let Some(format) = format else { return };
        match (format.get("type").and_then(Value::as_str), format.get("schema")) {
            (Some("json_schema"), Some(schema)) => {
                body.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}),
                );
            }
            _ => self.dropped.push("output_format".into()),
        }
    }
}

/// One text part as a string; several parts (or any non-text part) as a list.
fn collapse(mut parts: Vec<Value>) -> Value {
    if parts.len() == 1 && parts[0]["type"] == "text" {
        return parts.remove(0)["text"].take();
    }
    Value::Array(parts)
}

/// An image source as a chat `image_url`: a data URL for base64 data, or the URL itself.
fn image_url(source: Option<&Value>) -> Option<String> {
    let source = source?;
    match source.get("type").and_then(Value::as_str)? {
        "base64" => {
            let media = source.get("media_type").and_then(Value::as_str)?;
            let data = source.get("data").and_then(Value::as_str)?;
            Some(format!("data:{media};base64,{data}"))
        }
        "url" => source.get("url").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The strings of a block chat cannot carry, as one text part (for counting only).
fn loose_text(block: &Value) -> Option<Value> {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push(' ');
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(fields) => fields
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "type" | "cache_control"))
                .for_each(|(_, v)| walk(v, out)),
            _ => {}
        }
    }
    let mut text = String::new();
    walk(block, &mut text);
    let text = text.trim_end();
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

// ------------------------------------------------------------------------------ answers

/// A Databricks chat answer (as it came) as a Message for the client.
pub fn translated_answer(
    upstream: &[u8],
    model_group: &str,
    req: &MessagesRequest,
) -> Result<MessagesAnswer, ApiError> {
    let chat = crate::databricks::normalize_chat_completion(upstream, model_group)?;
    let chat: Value = serde_json::from_slice(&chat.bytes)
        .map_err(|e| ApiError::internal(format!("cannot read the normalised answer: {e}")))?;
    from_chat_answer(&chat, model_group, req)
}

/// A normalised chat answer (`content` text, `thinking_blocks`, `tool_calls`) as a Message.
/// Thinking is shown only to a client that asked for it, as Claude does.
pub fn from_chat_answer(chat: &Value, model_group: &str, req: &MessagesRequest) -> Result<MessagesAnswer, ApiError> {
    let choice = chat
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| ApiError::bad_gateway("Databricks returned a malformed answer (no choice)"))?;
    let message = choice.get("message").cloned().unwrap_or(Value::Null);
    let mut content = Vec::new();
    if req.shows_thinking() {
        content.extend(thinking_blocks(&message));
    }
    let text = match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter(|p| p["type"] == "text").filter_map(|p| p.get("text").and_then(Value::as_str)).collect()
        }
        _ => String::new(),
    };
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let function = call.get("function").cloned().unwrap_or(Value::Null);
        let input = tool_input(function.get("arguments"))?;
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .map_or_else(|| message_id(None).replacen("msg_", "toolu_", 1), str::to_string);
        content.push(json!({"type": "tool_use", "id": id, "name": function.get("name").cloned().unwrap_or(Value::Null), "input": input}));
    }
    let stops: Vec<String> = req.stop_sequences().map(str::to_string).collect();
    let (stop_reason, stop_sequence) = stop_reason(choice, &stops);
    let usage = Usage::from_chat(chat.get("usage"));
    let id = message_id(chat.get("id").and_then(Value::as_str));
    let answer = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model_group,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage.unwrap_or_default().to_json(),
    });
    let bytes = crate::json::to_vec(&answer);
    Ok(MessagesAnswer { bytes, usage, id: Some(id) })
}

/// A chat message's `thinking_blocks` (or bare `reasoning_content`) as thinking blocks.
fn thinking_blocks(message: &Value) -> Vec<Value> {
    match message.get("thinking_blocks").and_then(Value::as_array) {
        Some(blocks) => blocks
            .iter()
            .filter_map(|b| match b.get("type").and_then(Value::as_str) {
                Some("thinking") => Some(json!({"type": "thinking",
                    "thinking": b.get("thinking").and_then(Value::as_str).unwrap_or(""),
                    "signature": b.get("signature").and_then(Value::as_str).unwrap_or("")})),
                Some("redacted_thinking") => Some(json!({"type": "redacted_thinking", "data": b.get("data")})),
                _ => None,
            })
            .collect(),
        None => match message.get("reasoning_content").and_then(Value::as_str) {
            Some(text) if !text.is_empty() => vec![json!({"type": "thinking", "thinking": text, "signature": ""})],
            _ => Vec::new(),
        },
    }
}

/// A tool call's `arguments` (JSON text) as a `tool_use` input object.
pub(super) fn tool_input(arguments: Option<&Value>) -> Result<Value, ApiError> {
    match arguments {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(json!({})),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(input @ Value::Object(_)) => Ok(input),
            _ => Err(ApiError::bad_gateway("The model's tool call arguments are not a JSON object")),
        },
        Some(input @ Value::Object(_)) => Ok(input.clone()),
        Some(_) => Err(ApiError::bad_gateway("The model's tool call arguments are not a JSON object")),
    }
}

/// `finish_reason` as `stop_reason`. A stop sequence is told apart from a natural end only when
/// the backend names the one it matched (vLLM's `stop_reason` on the choice).
pub(super) fn stop_reason(choice: &Value, stop_sequences: &[String]) -> (&'static str, Value) {
    match choice.get("finish_reason").and_then(Value::as_str) {
        Some("length") => ("max_tokens", Value::Null),
        Some("tool_calls" | "function_call") => ("tool_use", Value::Null),
        Some("content_filter") => ("refusal", Value::Null),
        _ => match choice.get("stop_reason").and_then(Value::as_str) {
            Some(matched) if stop_sequences.iter().any(|s| s == matched) => ("stop_sequence", json!(matched)),
            _ => ("end_turn", Value::Null),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anthropic::parse_request;

    fn req(v: Value) -> MessagesRequest {
        parse_request(v.to_string().as_bytes()).unwrap()
    }

    fn chat(v: Value) -> ChatTranslation {
        to_chat_body(&req(v), None).unwrap()
    }

    /// A Claude Code-like agent turn: cached system blocks, a tool loop, images, thinking.
    fn agent_turn() -> Value {
        json!({
            "model": "gpt-alias", "max_tokens": 32000, "stream": true,
            "system": [{"type": "text", "text": "You are an agent."},
                       {"type": "text", "text": "Be careful.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this picture, and the weather in Paris?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "I should call the tool.", "signature": "sig1"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "screenshot", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C, sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [
                        {"type": "text", "text": "Here it is"},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/s.png"}}]},
                    {"type": "text", "text": "Thanks, summarise.", "cache_control": {"type": "ephemeral"}}]}],
            "tools": [{"name": "get_weather", "description": "Current weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                       "cache_control": {"type": "ephemeral"}},
                      {"name": "screenshot", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 4096},
            "temperature": 0.5, "top_k": 40, "stop_sequences": ["</done>"],
            "metadata": {"user_id": "user-7"}, "context_management": {"edits": []}
        })
    }

    #[test]
    fn an_agent_turn_becomes_a_chat_request() {
        let ChatTranslation { body, mut dropped } = chat(agent_turn());
        assert_eq!(
            body["messages"],
            json!([
                {"role": "system", "content": [{"type": "text", "text": "You are an agent."}, {"type": "text", "text": "Be careful."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this picture, and the weather in Paris?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
                {"role": "assistant", "content": "Checking.",
                 "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "screenshot", "arguments": "{}"}}],
                 "thinking_blocks": [{"type": "thinking", "thinking": "I should call the tool.", "signature": "sig1"}],
                 "reasoning_content": "I should call the tool."},
                {"role": "tool", "tool_call_id": "call_1", "content": "18°C, sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": "Here it is"},
                {"role": "user", "content": [
                    {"type": "text", "text": "Thanks, summarise."},
                    {"type": "image_url", "image_url": {"url": "https://example.com/s.png"}}]}
            ])
        );
        assert_eq!(
            body["tools"],
            json!([
                {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "screenshot", "parameters": {"type": "object"}}}
            ])
        );
        assert_eq!(body["tool_choice"], "auto");
        assert_eq!(body["thinking"], json!({"type": "enabled", "budget_tokens": 4096}));
        assert_eq!((body["max_tokens"].as_u64(), body["stream"].as_bool()), (Some(32000), Some(true)));
        assert_eq!((body["temperature"].as_f64(), body["top_k"].as_u64()), (Some(0.5), Some(40)));
        assert_eq!(body["stop"], json!(["</done>"]));
        assert_eq!(body["user"], "user-7");
        for gone in ["system", "stop_sequences", "metadata", "context_management"] {
            assert!(!body.contains_key(gone), "{gone}");
        }
        dropped.sort();
        assert_eq!(dropped, ["cache_control", "context_management", "tool_choice.disable_parallel_tool_use"]);
    }

    #[test]
    fn the_chat_path_then_prepares_it_per_family() {
        use crate::databricks::prepare_body;
        use crate::openai::Kind;
        let ChatTranslation { body, .. } = chat(agent_turn());
        let mut gpt = body.clone();
        prepare_body(Kind::Chat, &mut gpt, "databricks-gpt-5-1", true, None);
        assert_eq!(gpt["reasoning_effort"], "high");
        assert!(!gpt.contains_key("thinking"));
        assert_eq!(gpt["model"], "databricks-gpt-5-1");
        assert_eq!(gpt["stream_options"], json!({"include_usage": true}));
        // Thinking sent back becomes Databricks' reasoning part again, signature included.
        assert_eq!(
            gpt["messages"][2]["content"],
            json!([{"type": "reasoning", "summary": [{"type": "summary_text", "text": "I should call the tool.", "signature": "sig1"}]},
                   {"type": "text", "text": "Checking."}])
        );
        assert!(gpt["messages"][2].get("reasoning_content").is_none());
    }

    #[test]
    fn claude_codes_request_to_a_model_it_does_not_know_translates() {
        // What Claude Code 2.1 sends for a model id it does not know: system messages among the
        // others, adaptive thinking with an effort, a tool loaded on demand.
        let t = chat(json!({
            "model": "databricks-gpt-5-1", "max_tokens": 32000, "stream": true,
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "<system-reminder>env</system-reminder>"},
                                              {"type": "text", "text": "say hello"}]},
                {"role": "system", "content": [{"type": "text", "text": "Today is Tuesday.", "cache_control": {"type": "ephemeral"}}]}],
            "tools": [{"name": "ToolSearch", "description": "Find tools", "input_schema": {"type": "object"}, "defer_loading": true}],
            "thinking": {"type": "adaptive", "display": "omitted"},
            "output_config": {"effort": "high"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "metadata": {"user_id": "{\"device_id\":\"68a709806ebd7dccf1341c71\",\"account_uuid\":\"\",\"session_id\":\"72aae2b8-305a-4f61\"}"}
        }));
        assert_eq!(
            t.body["messages"],
            json!([
                {"role": "system", "content": "You are Claude Code."},
                {"role": "user", "content": [{"type": "text", "text": "<system-reminder>env</system-reminder>"},
                                             {"type": "text", "text": "say hello"}]},
                {"role": "system", "content": "Today is Tuesday."}
            ])
        );
        assert_eq!(t.body["reasoning_effort"], "high");
        assert_eq!(
            t.body["tools"],
            json!([{"type": "function", "function": {"name": "ToolSearch", "description": "Find tools", "parameters": {"type": "object"}}}])
        );
        assert!(!t.body.contains_key("user"));
        assert_eq!(t.dropped, ["metadata.user_id", "context_management", "cache_control"]);
    }

    #[test]
    fn simple_requests_stay_simple() {
        let ChatTranslation { body, dropped } = chat(json!({"model": "m", "max_tokens": 10, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                         {"role": "user", "content": [{"type": "text", "text": "Bye"}]}]}));
        assert_eq!(
            Value::Object(body),
            json!({"model": "m", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Bye"}], "max_tokens": 10})
        );
        assert!(dropped.is_empty());
    }

    #[test]
    fn choices_documents_and_structured_output_translate() {
        let mut v = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Plain notes"}, "title": "Notes"},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
            {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "Part"}]}}]}],
            "output_format": {"type": "json_schema", "schema": {"type": "object"}}});
        for (choice, mapped) in [
            (json!({"type": "any"}), json!("required")),
            (json!({"type": "none"}), json!("none")),
            (json!({"type": "tool", "name": "f"}), json!({"type": "function", "function": {"name": "f"}})),
        ] {
            v["tool_choice"] = choice;
            let body = chat(v.clone()).body;
            assert_eq!(body["tool_choice"], mapped);
            assert_eq!(
                body["messages"][0]["content"],
                json!([{"type": "text", "text": "Notes\n\nPlain notes"},
                       {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBER"}},
                       {"type": "text", "text": "Part"}])
            );
            assert_eq!(
                body["response_format"],
                json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}, "strict": true}})
            );
        }
        let adaptive = chat(json!({"model": "m", "max_tokens": 10, "thinking": {"type": "adaptive"},
            "messages": [{"role": "user", "content": "x"}]}));
        assert_eq!(adaptive.body["reasoning_effort"], "medium");
        let capped = to_chat_body(
            &req(json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "x"}]})),
            Some(40),
        );
        assert_eq!(capped.unwrap().body["max_tokens"], 40);
    }

    #[test]
    fn what_chat_cannot_carry_is_refused_but_still_counted() {
        let base = |extra: Value| {
            let mut v =
                json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Search the web"}]});
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            v
        };
        let cases = [
            (base(json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]})), "tools[0]"),
            (base(json!({"mcp_servers": [{"type": "url", "url": "https://mcp", "name": "x"}]})), "mcp_servers"),
            (
                base(
                    json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}]}),
                ),
                "messages[0].content[0]",
            ),
            (
                base(
                    json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f1"}}]}]}),
                ),
                "messages[0].content[0]",
            ),
            (
                base(
                    json!({"messages": [{"role": "user", "content": [{"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "found"}]}]}]}),
                ),
                "messages[0].content[0]",
            ),
            (
                base(
                    json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {"query": "q"}}]}]}),
                ),
                "messages[1].content[0]",
            ),
        ];
        for (body, param) in cases {
            let r = req(body.clone());
            let e = to_chat_body(&r, None).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{body}");
            // The tally still sees the request.
            assert!(crate::anthropic::prompt_tally(&r).estimate() > 3, "{body}");
        }
        let r = req(base(
            json!({"messages": [{"role": "user", "content": [{"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "found"}]}]}]}),
        ));
        assert_eq!(chat_body_for_tally(&r)["messages"][0]["content"], "s t found");
    }

    fn answer(chat: Value, req_body: Value) -> Value {
        let a = from_chat_answer(&chat, "group", &req(req_body)).unwrap();
        serde_json::from_slice(&a.bytes).unwrap()
    }

    fn plain_request() -> Value {
        json!({"model": "group", "max_tokens": 100, "messages": [{"role": "user", "content": "x"}]})
    }

    #[test]
    fn a_chat_answer_becomes_a_message() {
        let raw = br#"{"id":"chatcmpl_3f78","object":"chat.completion","created":1,"model":"served","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","tool_calls":null},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":230,"completion_tokens":38,"total_tokens":268,"cache_read_input_tokens":200}}"#;
        let a = translated_answer(raw, "group", &req(plain_request())).unwrap();
        let v: Value = serde_json::from_slice(&a.bytes).unwrap();
        assert_eq!(
            v,
            json!({"id": "msg_3f78", "type": "message", "role": "assistant", "model": "group",
                   "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn", "stop_sequence": null,
                   "usage": {"input_tokens": 30, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 200, "output_tokens": 38}})
        );
        assert_eq!(a.id.as_deref(), Some("msg_3f78"));
        assert_eq!(a.usage.map(|u| u.prompt_tokens()), Some(230));
    }

    #[test]
    fn tool_calls_and_thinking_become_blocks() {
        let raw = json!({"id": "chatcmpl_x", "choices": [{"index": 0, "message": {"role": "assistant", "content": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Need weather.", "signature": "sig9"},
                                              {"type": "summary_encrypted_text", "data": "enc"}]},
            {"type": "text", "text": "Let me look."}],
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                           {"id": "call_10", "type": "function", "function": {"name": "noop", "arguments": ""}}]},
            "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 10, "completion_tokens": 5}});
        let mut thinking_req = plain_request();
        thinking_req["thinking"] = json!({"type": "enabled", "budget_tokens": 2048});
        let a = translated_answer(raw.to_string().as_bytes(), "group", &req(thinking_req)).unwrap();
        let v: Value = serde_json::from_slice(&a.bytes).unwrap();
        assert_eq!(
            v["content"],
            json!([
                {"type": "thinking", "thinking": "Need weather.", "signature": "sig9"},
                {"type": "redacted_thinking", "data": "enc"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_10", "name": "noop", "input": {}}
            ])
        );
        assert_eq!(v["stop_reason"], "tool_use");
        // Not asked for: no thinking shown.
        let v: Value = serde_json::from_slice(
            &translated_answer(raw.to_string().as_bytes(), "group", &req(plain_request())).unwrap().bytes,
        )
        .unwrap();
        assert_eq!(v["content"][0]["type"], "text");
        let bad = json!({"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}, "finish_reason": "tool_calls"}]});
        assert_eq!(from_chat_answer(&bad, "g", &req(plain_request())).unwrap_err().status, 502);
        assert_eq!(from_chat_answer(&json!({"choices": []}), "g", &req(plain_request())).unwrap_err().status, 502);
    }

    #[test]
    fn finish_reasons_become_stop_reasons() {
        let mut with_stop = plain_request();
        with_stop["stop_sequences"] = json!(["END"]);
        let cases = [
            (json!({"finish_reason": "stop"}), "end_turn", Value::Null),
            (json!({"finish_reason": "length"}), "max_tokens", Value::Null),
            (json!({"finish_reason": "tool_calls"}), "tool_use", Value::Null),
            (json!({"finish_reason": "content_filter"}), "refusal", Value::Null),
            (json!({"finish_reason": "stop", "stop_reason": "END"}), "stop_sequence", json!("END")),
            (json!({"finish_reason": "stop", "stop_reason": 128009}), "end_turn", Value::Null),
        ];
        for (mut choice, reason, sequence) in cases {
            choice["message"] = json!({"role": "assistant", "content": "x"});
            let v = answer(json!({"choices": [choice]}), with_stop.clone());
            assert_eq!((v["stop_reason"].as_str(), &v["stop_sequence"]), (Some(reason), &sequence));
            // No usage from upstream: zeros shown, none reported (the runtime estimates).
            assert_eq!(v["usage"]["output_tokens"], 0);
        }
        let a = from_chat_answer(
            &json!({"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]}),
            "g",
            &req(plain_request()),
        )
        .unwrap();
        assert_eq!(a.usage, None);
    }
}
