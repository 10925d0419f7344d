//! A Responses request as a chat completions body, for deployments that do not take the
//! Responses API. The body is what a chat client would send; the per-endpoint steps that every
//! chat request gets (`reasoning_effort` to Claude's `thinking`, the endpoint as `model`, usage
//! in streams, thinking blocks back to reasoning parts) follow in `databricks::prepare_body`.
//!
//! What chat completions cannot carry is never dropped silently: a request that depends on it
//! (a forced hosted tool, a stored file) is refused; what only adds to it (a hosted tool among
//! others, a hosted tool's past call in the history, an unknown field) is left out and named
//! in [`ChatTranslation::warnings`].

use serde_json::{json, Map, Value};

use super::request::{item_type, ResponsesRequest};
use crate::openai::ApiError;

/// A translated reasoning item carries Claude's thinking signature (or its redacted thinking) in
/// `encrypted_content`, behind one of these prefixes, so that it can go back to Claude when the
/// client sends the item in its next request. Other `encrypted_content` (OpenAI's own) means
/// nothing to another model.
pub(super) const SIGNATURE_PREFIX: &str = "gateway-thinking-signature:";
pub(super) const REDACTED_PREFIX: &str = "gateway-redacted-thinking:";

/// A chat completions body translated from a Responses request.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatTranslation {
    /// The body as a chat client would send it (`model` is still the client's).
    pub body: Map<String, Value>,
    /// What of the request chat completions cannot carry and was left out, one sentence each.
    pub warnings: Vec<String>,
}

/// Fields that are the gateway's business or change nothing in the answer: consumed here.
const BOOKKEEPING: [&str; 16] = [
    "model",
    "stream",
    "store",
    "metadata",
    "user",
    "include",
    "prompt_cache_key",
    "client_metadata",
    "safety_identifier",
    "service_tier",
    "stream_options",
    "background",
    "previous_response_id",
    "conversation",
    "prompt",
    "drop_params",
];
/// Fields translated below.
const TRANSLATED: [&str; 11] = [
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "temperature",
    "top_p",
    "reasoning",
    "text",
    "parallel_tool_calls",
    "truncation",
];

/// How chat function names map back to Responses tools: functions inside a `namespace` tool
/// are offered to the model as `{namespace}__{name}` (chat has no namespaces) and come back as
/// a call with separate `namespace` and `name`, as Codex routes them; `custom` (freeform) tools
/// are offered as a function taking one string, `input`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ToolNames {
    /// (chat name, namespace, name) of each namespaced tool.
    namespaced: Vec<(String, String, String)>,
    /// Chat names of custom tools.
    custom: Vec<String>,
}

fn qualified(namespace: &str, name: &str) -> String {
    format!("{namespace}__{name}")
}

impl ToolNames {
    pub(super) fn of(body: &Map<String, Value>) -> ToolNames {
        let mut names = ToolNames::default();
        for tool in body.get("tools").and_then(Value::as_array).into_iter().flatten() {
            let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
            match tool.get("type").and_then(Value::as_str) {
                Some("custom") => names.custom.push(name.to_string()),
                Some("namespace") => {
                    for inner in tool.get("tools").and_then(Value::as_array).into_iter().flatten() {
                        let inner_name = inner.get("name").and_then(Value::as_str).unwrap_or("");
                        let chat_name = qualified(name, inner_name);
                        if inner.get("type").and_then(Value::as_str) == Some("custom") {
                            names.custom.push(chat_name.clone());
                        }
                        names.namespaced.push((chat_name, name.to_string(), inner_name.to_string()));
                    }
                }
                _ => {}
            }
        }
        names
    }

    pub(super) fn is_custom(&self, chat_name: &str) -> bool {
        self.custom.iter().any(|c| c == chat_name)
    }

    /// The namespace and name a chat function name stands for, if it is a namespaced tool's.
    pub(super) fn namespaced(&self, chat_name: &str) -> Option<(&str, &str)> {
        self.namespaced.iter().find(|(c, _, _)| c == chat_name).map(|(_, ns, name)| (ns.as_str(), name.as_str()))
    }

    /// The Responses item for a chat tool call: `function_call` (with `namespace` when it has
    /// one) or `custom_tool_call` (its `input` read from the one-string arguments).
    pub(super) fn call_item(&self, id: &str, call_id: &str, chat_name: &str, arguments: &str, status: &str) -> Value {
        let (namespace, name) = match self.namespaced(chat_name) {
            Some((ns, name)) => (Some(ns), name),
            None => (None, chat_name),
        };
        if self.is_custom(chat_name) {
            return json!({"id": id, "type": "custom_tool_call", "status": status, "call_id": call_id,
                          "name": name, "input": custom_input(arguments)});
        }
        let mut item = json!({"id": id, "type": "function_call", "status": status, "arguments": arguments,
                              "call_id": call_id, "name": name});
        if let Some(ns) = namespace {
            item["namespace"] = Value::String(ns.to_string());
        }
        item
    }
}

/// A custom tool's input from the arguments of the function that stands for it; the arguments
/// themselves when they are not the expected object (a model that answered freely).
pub(super) fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(args)) => match args.get("input") {
            Some(Value::String(input)) => input.clone(),
            _ => arguments.to_string(),
        },
        _ => arguments.to_string(),
    }
}

/// The chat name for a function call item or tool choice: qualified when it has a namespace.
fn chat_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => qualified(ns, name),
        _ => name.to_string(),
    }
}

impl ResponsesRequest {
    /// The chat completions body for a deployment that does not take the Responses API.
    /// `output_cap` is a `max_output_tokens` a budget imposed: the body never asks for more.
    pub fn to_chat(&self, output_cap: Option<u64>) -> Result<ChatTranslation, ApiError> {
        let src = &self.body;
        let mut warnings = Vec::new();
        let mut body = Map::new();
        body.insert("model".into(), Value::String(self.model.clone()));
        body.insert("messages".into(), Value::Array(messages(src, &mut warnings)?));
        if self.stream {
            body.insert("stream".into(), Value::Bool(true));
        }
        let (tools, names) = tools(src, &mut warnings)?;
        if let Some(choice) = tool_choice(src.get("tool_choice"), &names)? {
            match choice {
                Choice::Allowed { mode, allowed } => {
                    let kept: Vec<Value> = tools.into_iter().filter(|t| allowed.contains(&function_name(t))).collect();
                    if !kept.is_empty() {
                        body.insert("tools".into(), Value::Array(kept));
                        body.insert("tool_choice".into(), Value::String(mode));
                    }
                }
                Choice::Chat(choice) if !tools.is_empty() => {
                    body.insert("tools".into(), Value::Array(tools));
                    body.insert("tool_choice".into(), choice);
                }
                Choice::Chat(_) => {}
            }
        } else if !tools.is_empty() {
            body.insert("tools".into(), Value::Array(tools));
        }
        let max = src.get("max_output_tokens").and_then(Value::as_u64);
        if let Some(max) = match (max, output_cap) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        } {
            body.insert("max_tokens".into(), max.into());
        }
        for field in ["temperature", "top_p"] {
            if let Some(v) = src.get(field).filter(|v| !v.is_null()) {
                body.insert(field.into(), v.clone());
            }
        }
        match src.get("reasoning").and_then(|r| r.get("effort")).and_then(Value::as_str) {
            None | Some("none") => {}
            Some(effort) => {
                body.insert("reasoning_effort".into(), Value::String(effort.to_string()));
            }
        }
        if let Some(text) = src.get("text").and_then(Value::as_object) {
            if let Some(format) = response_format(text.get("format")) {
                body.insert("response_format".into(), format);
            }
            if text.get("verbosity").is_some_and(|v| !v.is_null()) {
                warnings.push("`text.verbosity` has no chat completions equivalent and was left out".into());
            }
        }
        if src.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
            warnings.push("`parallel_tool_calls: false` cannot be passed to chat completions on Databricks".into());
        }
        if src.get("truncation").and_then(Value::as_str).is_some_and(|t| t != "disabled") {
            warnings.push("`truncation` is not applied: the conversation is sent whole".into());
        }
        for field in src.keys() {
            if !BOOKKEEPING.contains(&field.as_str())
                && !TRANSLATED.contains(&field.as_str())
                && field != "additional_drop_params"
                && !src[field].is_null()
            {
                warnings.push(format!("`{field}` has no chat completions equivalent and was left out"));
            }
        }
        Ok(ChatTranslation { body, warnings })
    }
}

/// The name of a chat tool (`{"type": "function", "function": {"name"}}`).
fn function_name(tool: &Value) -> String {
    tool.get("function").and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or("").to_string()
}

/// One assistant turn being gathered from consecutive assistant-side items (reasoning, output
/// messages, calls): chat has one assistant message where Responses has several items.
#[derive(Default)]
struct AssistantTurn {
    text: String,
    tool_calls: Vec<Value>,
    thinking_blocks: Vec<Value>,
}

impl AssistantTurn {
    fn flush(&mut self, messages: &mut Vec<Value>) {
        let turn = std::mem::take(self);
        if turn.text.is_empty() && turn.tool_calls.is_empty() {
            // Reasoning alone is no turn (and Claude refuses an empty text).
            return;
        }
        let mut message = Map::new();
        message.insert("role".into(), "assistant".into());
        message.insert("content".into(), if turn.text.is_empty() { Value::Null } else { Value::String(turn.text) });
        if !turn.tool_calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(turn.tool_calls));
        }
        if !turn.thinking_blocks.is_empty() {
            // `databricks::prepare_body` turns these into Databricks' reasoning parts.
            message.insert("thinking_blocks".into(), Value::Array(turn.thinking_blocks));
        }
        messages.push(Value::Object(message));
    }
}

fn messages(src: &Map<String, Value>, warnings: &mut Vec<String>) -> Result<Vec<Value>, ApiError> {
    let mut messages = Vec::new();
    if let Some(instructions) = src.get("instructions").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    let items = match src.get("input") {
        Some(Value::String(text)) => {
            messages.push(json!({"role": "user", "content": text}));
            return Ok(merge_leading_system(messages));
        }
        Some(Value::Array(items)) => items,
        _ => return Ok(merge_leading_system(messages)),
    };
    let mut turn = AssistantTurn::default();
    let mut foreign_reasoning = false;
    for (i, item) in items.iter().enumerate() {
        let path = format!("input[{i}]");
        match item_type(item).unwrap_or("") {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                if role == "assistant" {
                    turn.text.push_str(&text_of(item.get("content")));
                    continue;
                }
                turn.flush(&mut messages);
                if let Some(message) = message(role, item.get("content"), &path, warnings)? {
                    messages.push(message);
                }
            }
            "function_call" | "custom_tool_call" => {
                let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
                let namespace = item.get("namespace").and_then(Value::as_str);
                let arguments = if item_type(item) == Some("custom_tool_call") {
                    json!({"input": s("input")}).to_string()
                } else {
                    s("arguments").to_string()
                };
                turn.tool_calls.push(json!({"id": s("call_id"), "type": "function",
                    "function": {"name": chat_name(s("name"), namespace), "arguments": arguments}}));
            }
            "function_call_output" | "custom_tool_call_output" => {
                turn.flush(&mut messages);
                let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or("");
                let content = tool_output(item.get("output"), &format!("{path}.output"), warnings)?;
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
            }
            "reasoning" => match thinking_block(item) {
                Some(block) => turn.thinking_blocks.push(block),
                None => foreign_reasoning = true,
            },
            other => warnings
                .push(format!("`{path}` (a `{other}` item) has no chat completions equivalent and was left out")),
        }
    }
    turn.flush(&mut messages);
    if foreign_reasoning {
        warnings.push("reasoning items from another model were left out: only their own model can read them".into());
    }
    Ok(merge_leading_system(messages))
}

/// The thinking block a reasoning item stands for, if the gateway made it (see
/// [`SIGNATURE_PREFIX`]).
fn thinking_block(item: &Value) -> Option<Value> {
    let encrypted = item.get("encrypted_content").and_then(Value::as_str)?;
    if let Some(data) = encrypted.strip_prefix(REDACTED_PREFIX) {
        return Some(json!({"type": "redacted_thinking", "data": data}));
    }
    let signature = encrypted.strip_prefix(SIGNATURE_PREFIX)?;
    let thinking: String = item
        .get("summary")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("text").and_then(Value::as_str))
        .collect();
    Some(json!({"type": "thinking", "thinking": thinking, "signature": signature}))
}

/// The text of a content (a string, or the text of its text-like parts).
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").or_else(|| p.get("refusal")).and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// A user, system or developer message; `None` when nothing of it can be sent.
fn message(
    role: &str,
    content: Option<&Value>,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<Value>, ApiError> {
    if role == "system" || role == "developer" {
        // Databricks' chat roles are system, user, assistant and tool.
        let text = match content {
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join("\n\n"),
            other => text_of(other),
        };
        return Ok((!text.is_empty()).then(|| json!({"role": "system", "content": text})));
    }
    let content = match content {
        Some(Value::Array(parts)) => match chat_parts(parts, &format!("{path}.content"), warnings)? {
            Some(content) => content,
            None => {
                warnings.push(format!("`{path}` had no content chat completions can carry and was left out"));
                return Ok(None);
            }
        },
        Some(other) => other.clone(),
        None => Value::String(String::new()),
    };
    Ok(Some(json!({"role": role, "content": content})))
}

/// Responses content parts as chat content: a string for a single text, else a list of parts.
/// Empty texts are left out (Claude refuses empty text blocks).
fn chat_parts(parts: &[Value], path: &str, warnings: &mut Vec<String>) -> Result<Option<Value>, ApiError> {
    let mut out = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let path = format!("{path}[{j}]");
        match part.get("type").and_then(Value::as_str).unwrap_or("") {
            "input_text" | "output_text" | "text" => {
                let text = part.get("text").and_then(Value::as_str).unwrap_or("");
                if !text.is_empty() {
                    out.push(json!({"type": "text", "text": text}));
                }
            }
            "refusal" => {
                let text = part.get("refusal").and_then(Value::as_str).unwrap_or("");
                out.push(json!({"type": "text", "text": text}));
            }
            "input_image" => {
                let Some(url) = part.get("image_url").and_then(Value::as_str) else {
                    return Err(ApiError::invalid_request(
                        format!("`{path}.file_id` refers to a file stored on OpenAI's platform; send the image as `image_url`"),
                        &format!("{path}.file_id"),
                    ));
                };
                let mut image = json!({"url": url});
                if let Some(detail) = part.get("detail").and_then(Value::as_str).filter(|d| *d != "auto") {
                    image["detail"] = Value::String(detail.to_string());
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            "input_file" => match part.get("file_data").and_then(Value::as_str) {
                Some(data) => {
                    let mut file = json!({"file_data": data});
                    if let Some(name) = part.get("filename").and_then(Value::as_str) {
                        file["filename"] = Value::String(name.to_string());
                    }
                    out.push(json!({"type": "file", "file": file}));
                }
                None => {
                    return Err(ApiError::invalid_request(
                        format!("`{path}`: files by `file_id` or `file_url` are not supported; send `file_data`"),
                        &path,
                    ))
                }
            },
            other => warnings
                .push(format!("`{path}` (a `{other}` part) has no chat completions equivalent and was left out")),
        }
    }
    Ok(match out.as_slice() {
        [] => None,
        [only] if only["type"] == "text" => Some(only["text"].clone()),
        _ => Some(Value::Array(out)),
    })
}

/// A tool's output: a string, or its parts (texts joined when there is nothing else).
fn tool_output(output: Option<&Value>, path: &str, warnings: &mut Vec<String>) -> Result<Value, ApiError> {
    match output {
        Some(Value::Array(parts)) => {
            if parts.iter().all(|p| p.get("text").is_some_and(Value::is_string)) {
                return Ok(Value::String(text_of(output)));
            }
            Ok(chat_parts(parts, path, warnings)?.unwrap_or(Value::String(String::new())))
        }
        Some(other) => Ok(other.clone()),
        None => Ok(Value::String(String::new())),
    }
}

/// Leading system messages (instructions, then Codex's developer messages) become one: several
/// system messages in a row are not accepted by every family (older Llama templates).
fn merge_leading_system(messages: Vec<Value>) -> Vec<Value> {
    let leading = messages.iter().take_while(|m| m["role"] == "system").count();
    if leading < 2 {
        return messages;
    }
    let mut rest = messages.into_iter();
    let joined: Vec<String> =
        rest.by_ref().take(leading).filter_map(|m| m["content"].as_str().map(str::to_string)).collect();
    let mut merged = vec![json!({"role": "system", "content": joined.join("\n\n")})];
    merged.extend(rest);
    merged
}

/// The chat tools for the request's tools; hosted tools (they run on OpenAI's platform) are
/// left out with a warning.
fn tools(src: &Map<String, Value>, warnings: &mut Vec<String>) -> Result<(Vec<Value>, ToolNames), ApiError> {
    let names = ToolNames::of(src);
    let mut out: Vec<Value> = Vec::new();
    for (i, tool) in src.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
        match tool.get("type").and_then(Value::as_str).unwrap_or("") {
            "function" | "custom" => out.push(chat_tool(tool, name)),
            "namespace" => {
                for inner in tool.get("tools").and_then(Value::as_array).into_iter().flatten() {
                    let inner_name = inner.get("name").and_then(Value::as_str).unwrap_or("");
                    match inner.get("type").and_then(Value::as_str) {
                        Some("function" | "custom") => out.push(chat_tool(inner, &qualified(name, inner_name))),
                        other => warnings.push(format!(
                            "tool `{inner_name}` of namespace `{name}` (type {}) is not available through chat completions and was left out",
                            other.unwrap_or("?")
                        )),
                    }
                }
            }
            other => warnings.push(format!(
                "tool {i} (`{other}`) is hosted by OpenAI and not available through chat completions; it was left out"
            )),
        }
    }
    let mut seen: Vec<String> = Vec::new();
    for name in out.iter().map(function_name) {
        if seen.contains(&name) {
            return Err(ApiError::invalid_request(
                format!(
                    "Two tools would be named `{name}` (namespaced tools are named `{{namespace}}__{{name}}` here)"
                ),
                "tools",
            ));
        }
        seen.push(name);
    }
    Ok((out, names))
}

/// A function or custom tool as a chat tool named `name`.
fn chat_tool(tool: &Value, name: &str) -> Value {
    let mut function = Map::new();
    function.insert("name".into(), Value::String(name.to_string()));
    let description = tool.get("description").and_then(Value::as_str).unwrap_or("");
    if tool.get("type").and_then(Value::as_str) == Some("custom") {
        // A freeform tool takes one text; its grammar, if any, is the model's to follow.
        let mut description = description.to_string();
        if let Some(format) = tool.get("format").filter(|f| f.get("type").and_then(Value::as_str) == Some("grammar")) {
            let syntax = format.get("syntax").and_then(Value::as_str).unwrap_or("grammar");
            let definition = format.get("definition").and_then(Value::as_str).unwrap_or("");
            description.push_str(&format!("\n\nThe input must follow this {syntax} grammar:\n{definition}"));
        }
        function.insert("description".into(), Value::String(description.trim_start().to_string()));
        function.insert(
            "parameters".into(),
            json!({"type": "object", "properties": {"input": {"type": "string", "description": "The tool's input"}},
                   "required": ["input"]}),
        );
    } else {
        if !description.is_empty() {
            function.insert("description".into(), Value::String(description.to_string()));
        }
        if let Some(parameters) = tool.get("parameters").filter(|p| p.is_object()) {
            function.insert("parameters".into(), parameters.clone());
        }
        // `strict: false` is every model's default; only `true` says something.
        if tool.get("strict") == Some(&Value::Bool(true)) {
            function.insert("strict".into(), Value::Bool(true));
        }
    }
    json!({"type": "function", "function": function})
}

enum Choice {
    Chat(Value),
    /// `allowed_tools`: the tools offered are cut to these, and `mode` becomes the choice.
    Allowed {
        mode: String,
        allowed: Vec<String>,
    },
}

fn tool_choice(choice: Option<&Value>, names: &ToolNames) -> Result<Option<Choice>, ApiError> {
    let choice = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => return Ok(Some(Choice::Chat(Value::String(s.clone())))),
        Some(c) => c,
    };
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let named = |v: &Value| {
        let name = s(v, "name").unwrap_or_default();
        let chat = chat_name(&name, v.get("namespace").and_then(Value::as_str));
        // A bare name may also be a namespaced tool's, if only one namespace has it.
        match names.namespaced.iter().filter(|(_, _, n)| *n == name).collect::<Vec<_>>().as_slice() {
            [(qualified, _, _)] if v.get("namespace").is_none() => qualified.clone(),
            _ => chat,
        }
    };
    match s(choice, "type").as_deref() {
        Some("function" | "custom") => {
            Ok(Some(Choice::Chat(json!({"type": "function", "function": {"name": named(choice)}}))))
        }
        Some("allowed_tools") => {
            let mode = s(choice, "mode").unwrap_or_else(|| "auto".into());
            let allowed = choice.get("tools").and_then(Value::as_array).into_iter().flatten().map(named).collect();
            Ok(Some(Choice::Allowed { mode, allowed }))
        }
        Some(other) => Err(ApiError::invalid_request(
            format!(
                "`tool_choice` forces the hosted tool `{other}`, which runs only on OpenAI's platform; this model is \
                 served through chat completions"
            ),
            "tool_choice",
        )),
        None => Ok(None),
    }
}

/// `text.format` as chat's `response_format`.
fn response_format(format: Option<&Value>) -> Option<Value> {
    let format = format?;
    match format.get("type").and_then(Value::as_str)? {
        "json_object" => Some(json!({"type": "json_object"})),
        "json_schema" => {
            let mut schema = Map::new();
            for field in ["name", "schema", "description", "strict"] {
                if let Some(v) = format.get(field).filter(|v| !v.is_null()) {
                    schema.insert(field.into(), v.clone());
                }
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        _ => None,
    }
}
