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

impl ResponsesRequest {
    /// The prompt as a chat body, for counting it (`PromptTally::of(Kind::Chat, ..)`) whichever
    /// way it is served: the chat translation, plus, as text, what a native deployment reads
    /// but the translation leaves out (reasoning sent back, hosted tools and their calls). Never
    /// fails: a request the translation refuses is counted from its JSON.
    pub fn chat_equivalent(&self) -> Map<String, Value> {
        let mut body = match self.to_chat(None) {
            Ok(t) => t.body,
            Err(_) => {
                let mut body = Map::new();
                let all = [self.body.get("instructions"), self.body.get("input"), self.body.get("tools")];
                let text: Vec<String> = all.iter().flatten().map(|v| v.to_string()).collect();
                body.insert("messages".into(), json!([{"role": "user", "content": text.join("\n")}]));
                return body;
            }
        };
        let items = self.body.get("input").and_then(Value::as_array).into_iter().flatten();
        let left_out = items.filter(|i| {
            !matches!(
                item_type(i),
                Some(
                    "message"
                        | "function_call"
                        | "custom_tool_call"
                        | "function_call_output"
                        | "custom_tool_call_output"
                )
            ) && !is_gateway_reasoning(i)
        });
        let tools = self.body.get("tools").and_then(Value::as_array).into_iter().flatten();
        let hosted = tools
            .filter(|t| !matches!(t.get("type").and_then(Value::as_str), Some("function" | "custom" | "namespace")));
        let extra: Vec<String> = left_out.chain(hosted).map(Value::to_string).collect();
        if let (false, Some(Value::Array(messages))) = (extra.is_empty(), body.get_mut("messages")) {
            messages.push(json!({"role": "user", "content": extra.join("\n")}));
        }
        body
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
            // Reasoning without `encrypted_content` (gpt-oss's, or summaries only) has nothing
            // a model could continue from; with someone else's, it is worth a warning.
            "reasoning" => match thinking_block(item) {
                Some(block) => turn.thinking_blocks.push(block),
                None => foreign_reasoning |= item.get("encrypted_content").is_some_and(|e| !e.is_null()),
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

/// A reasoning item the gateway made from a chat answer (it carries Claude's thinking).
pub(super) fn is_gateway_reasoning(item: &Value) -> bool {
    item_type(item) == Some("reasoning")
        && item
            .get("encrypted_content")
            .and_then(Value::as_str)
            .is_some_and(|e| e.starts_with(SIGNATURE_PREFIX) || e.starts_with(REDACTED_PREFIX))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::databricks::prepare_body;
    use crate::openai::Kind;
    use crate::responses::parse_request;

    fn translate(v: Value) -> ChatTranslation {
        parse_request(v.to_string().as_bytes()).unwrap().to_chat(None).unwrap()
    }

    fn shell_tool() -> Value {
        json!({"type": "function", "name": "shell", "description": "Runs a shell command", "strict": false,
               "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                              "required": ["command"], "additionalProperties": false}})
    }

    /// A Codex session's third turn: instructions, developer context, the user's ask, the
    /// model's reasoning and two parallel shell calls with their outputs, a web search from an
    /// earlier native turn, and the follow-up question.
    fn codex_turn() -> Value {
        json!({
            "model": "databricks-claude-sonnet-4-5",
            "instructions": "You are Codex, a coding agent.",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>workspace-write</permissions>"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>cwd=/repo</environment_context>"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "How many Rust files are there?"}]},
                {"type": "reasoning", "id": "rs_a00", "summary": [{"type": "summary_text", "text": "I should count files."}],
                 "encrypted_content": "gateway-thinking-signature:sig-123"},
                {"type": "message", "role": "assistant", "id": "msg_a01", "content": [{"type": "output_text", "text": "Let me look."}]},
                {"type": "function_call", "id": "fc_a02", "call_id": "call_1", "name": "shell", "arguments": "{\"command\":[\"ls\",\"src\"]}"},
                {"type": "function_call", "id": "fc_a03", "call_id": "call_2", "name": "shell", "arguments": "{\"command\":[\"ls\",\"tests\"]}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "lib.rs\nmain.rs"},
                {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "a.rs"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "There are 3."}]},
                {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "rust"}},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And lines?"}]}
            ],
            "tools": [shell_tool(), {"type": "web_search"}],
            "tool_choice": "auto", "parallel_tool_calls": true,
            "reasoning": {"effort": "medium", "summary": "auto"},
            "store": false, "stream": true, "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "019a-session", "max_output_tokens": 4000
        })
    }

    #[test]
    fn a_codex_turn_becomes_the_chat_conversation() {
        let t = translate(codex_turn());
        let b = &t.body;
        assert_eq!(
            b["messages"],
            json!([
                {"role": "system", "content": "You are Codex, a coding agent.\n\n<permissions>workspace-write</permissions>"},
                {"role": "user", "content": "<environment_context>cwd=/repo</environment_context>"},
                {"role": "user", "content": "How many Rust files are there?"},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":[\"ls\",\"src\"]}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":[\"ls\",\"tests\"]}"}}],
                 "thinking_blocks": [{"type": "thinking", "thinking": "I should count files.", "signature": "sig-123"}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "lib.rs\nmain.rs"},
                {"role": "tool", "tool_call_id": "call_2", "content": "a.rs"},
                {"role": "assistant", "content": "There are 3."},
                {"role": "user", "content": "And lines?"}
            ])
        );
        assert_eq!(
            b["tools"],
            json!([{"type": "function", "function": {"name": "shell", "description": "Runs a shell command",
                    "parameters": shell_tool()["parameters"]}}])
        );
        assert_eq!((b["tool_choice"].as_str(), b["max_tokens"].as_u64()), (Some("auto"), Some(4000)));
        assert_eq!((b["reasoning_effort"].as_str(), b["stream"].as_bool()), (Some("medium"), Some(true)));
        for gone in
            ["input", "instructions", "store", "include", "prompt_cache_key", "reasoning", "parallel_tool_calls"]
        {
            assert!(!b.contains_key(gone), "{gone}");
        }
        // The hosted tool and the hosted tool's call are named, not silently lost.
        assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
        assert!(t.warnings[0].contains("web_search_call"));
        assert!(t.warnings[1].contains("`web_search`") && t.warnings[1].contains("hosted"));
    }

    #[test]
    fn the_translation_feeds_the_per_endpoint_chat_steps() {
        let t = translate(codex_turn());
        // Claude: effort becomes a thinking budget, thinking blocks become reasoning parts.
        let mut claude = t.body.clone();
        prepare_body(Kind::Chat, &mut claude, "databricks-claude-sonnet-4-5", true, None);
        assert_eq!(claude["model"], "databricks-claude-sonnet-4-5");
        assert_eq!(claude["thinking"], json!({"type": "enabled", "budget_tokens": 2048}));
        assert!(!claude.contains_key("reasoning_effort"));
        assert_eq!(claude["stream_options"], json!({"include_usage": true}));
        assert_eq!(
            claude["messages"][3]["content"],
            json!([{"type": "reasoning", "summary": [{"type": "summary_text", "text": "I should count files.", "signature": "sig-123"}]},
                   {"type": "text", "text": "Let me look."}])
        );
        assert!(!claude["messages"][3].as_object().unwrap().contains_key("thinking_blocks"));
        // gpt-oss keeps the effort.
        let mut oss = t.body.clone();
        prepare_body(Kind::Chat, &mut oss, "databricks-gpt-oss-120b", false, None);
        assert_eq!(oss["reasoning_effort"], "medium");
    }

    #[test]
    fn only_the_gateways_own_reasoning_goes_back_to_the_model() {
        let t = translate(json!({"model": "m", "input": [
            {"role": "user", "content": "q"},
            {"type": "reasoning", "summary": [], "encrypted_content": "gAAAAopenai-blob"},
            {"type": "reasoning", "summary": [], "encrypted_content": "gateway-redacted-thinking:EncData=="},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "no signature"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "a"}]},
            {"role": "user", "content": "q2"}]}));
        assert_eq!(
            t.body["messages"][1],
            json!({"role": "assistant", "content": "a", "thinking_blocks": [{"type": "redacted_thinking", "data": "EncData=="}]})
        );
        assert_eq!(t.warnings.len(), 1);
        assert!(t.warnings[0].contains("reasoning items from another model"));
        // Reasoning with nothing after it is no assistant turn.
        let t = translate(json!({"model": "m", "input": [
            {"role": "user", "content": "q"},
            {"type": "reasoning", "summary": [], "encrypted_content": "gateway-thinking-signature:s"}]}));
        assert_eq!(t.body["messages"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn content_parts_become_chat_parts() {
        let t = translate(json!({"model": "m", "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_text", "text": ""},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "high"},
                {"type": "input_image", "image_url": "https://x/cat.jpg", "detail": "auto"},
                {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
                {"type": "input_audio", "input_audio": {}}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
            {"role": "user", "content": [{"type": "input_text", "text": "only text"}]},
            {"role": "system", "content": "late system"}]}));
        assert_eq!(
            t.body["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "https://x/cat.jpg"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}}]},
                {"role": "assistant", "content": "I can't."},
                {"role": "user", "content": "only text"},
                {"role": "system", "content": "late system"}])
        );
        assert!(t.warnings[0].contains("input_audio"), "{:?}", t.warnings);
        // What cannot be sent at all is refused, naming where.
        for (part, param) in [
            (json!({"type": "input_image", "file_id": "file-1"}), "input[0].content[0].file_id"),
            (json!({"type": "input_file", "file_id": "file-1"}), "input[0].content[0]"),
        ] {
            let body = json!({"model": "m", "input": [{"role": "user", "content": [part]}]});
            let e = parse_request(body.to_string().as_bytes()).unwrap().to_chat(None).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)));
        }
    }

    #[test]
    fn tool_outputs_with_images_keep_their_parts() {
        let t = translate(json!({"model": "m", "input": [
            {"role": "user", "content": "look"},
            {"type": "function_call", "call_id": "c1", "name": "view_image", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": [
                {"type": "input_text", "text": "here"}, {"type": "input_image", "image_url": "data:image/png;base64,AA"}]}],
            "tools": [{"type": "function", "name": "view_image", "parameters": {"type": "object"}}]}));
        assert_eq!(
            t.body["messages"][2]["content"],
            json!([{"type": "text", "text": "here"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}])
        );
        assert_eq!(t.body["messages"][1]["content"], Value::Null);
    }

    #[test]
    fn namespaced_and_custom_tools_become_functions_and_map_back() {
        let body = json!({"model": "m", "input": [
                {"role": "user", "content": "patch it"},
                {"type": "function_call", "call_id": "c1", "name": "search", "namespace": "mcp__docs", "arguments": "{\"q\":\"x\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "found"},
                {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
                {"type": "custom_tool_call_output", "call_id": "c2", "output": "done"}],
            "tools": [
                {"type": "namespace", "name": "mcp__docs", "description": "Docs",
                 "tools": [{"type": "function", "name": "search", "description": "Search docs", "strict": true,
                            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]},
                {"type": "custom", "name": "apply_patch", "description": "Apply a patch",
                 "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}],
            "tool_choice": {"type": "function", "name": "search"}});
        let request = parse_request(body.to_string().as_bytes()).unwrap();
        let t = request.to_chat(None).unwrap();
        assert_eq!(
            t.body["tools"],
            json!([
                {"type": "function", "function": {"name": "mcp__docs__search", "description": "Search docs",
                 "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}, "strict": true}},
                {"type": "function", "function": {"name": "apply_patch",
                 "description": "Apply a patch\n\nThe input must follow this lark grammar:\nstart: /.+/",
                 "parameters": {"type": "object", "properties": {"input": {"type": "string", "description": "The tool's input"}}, "required": ["input"]}}}])
        );
        assert_eq!(t.body["tool_choice"], json!({"type": "function", "function": {"name": "mcp__docs__search"}}));
        assert_eq!(t.body["messages"][1]["tool_calls"][0]["function"]["name"], "mcp__docs__search");
        assert_eq!(t.body["messages"][3]["tool_calls"][0]["function"]["arguments"], "{\"input\":\"*** Begin Patch\"}");
        assert_eq!(t.body["messages"][4], json!({"role": "tool", "tool_call_id": "c2", "content": "done"}));
        let names = ToolNames::of(&request.body);
        assert_eq!(
            names.call_item("fc_1", "call_9", "mcp__docs__search", "{}", "completed"),
            json!({"id": "fc_1", "type": "function_call", "status": "completed", "arguments": "{}", "call_id": "call_9",
                   "name": "search", "namespace": "mcp__docs"})
        );
        assert_eq!(
            names.call_item("ctc_1", "call_8", "apply_patch", "{\"input\":\"*** Begin\"}", "completed"),
            json!({"id": "ctc_1", "type": "custom_tool_call", "status": "completed", "call_id": "call_8",
                   "name": "apply_patch", "input": "*** Begin"})
        );
        assert_eq!(names.call_item("fc_2", "c", "plain", "{}", "completed")["name"], "plain");
    }

    #[test]
    fn tool_choice_translations_and_refusals() {
        let tools =
            json!([{"type": "function", "name": "a"}, {"type": "function", "name": "b"}, {"type": "web_search"}]);
        let with = |choice: Value| {
            let body = json!({"model": "m", "input": "x", "tools": tools, "tool_choice": choice});
            parse_request(body.to_string().as_bytes()).unwrap().to_chat(None)
        };
        assert_eq!(with(json!("required")).unwrap().body["tool_choice"], "required");
        let allowed =
            with(json!({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]}))
                .unwrap()
                .body;
        assert_eq!(allowed["tools"].as_array().unwrap().len(), 1);
        assert_eq!(allowed["tools"][0]["function"]["name"], "b");
        assert_eq!(allowed["tool_choice"], "required");
        let e = with(json!({"type": "web_search_preview"})).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("tool_choice")));
        // No tool left: no tool_choice either (chat refuses a choice without tools).
        let body = json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}], "tool_choice": "required"});
        let t = parse_request(body.to_string().as_bytes()).unwrap().to_chat(None).unwrap();
        assert!(!t.body.contains_key("tools") && !t.body.contains_key("tool_choice"));
        // Two tools that would share a chat name are refused.
        let body = json!({"model": "m", "input": "x", "tools": [
            {"type": "function", "name": "ns__f"}, {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "f"}]}]});
        let e = parse_request(body.to_string().as_bytes()).unwrap().to_chat(None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools"));
    }

    #[test]
    fn the_chat_equivalent_counts_what_a_native_deployment_reads() {
        use crate::prompt::{PromptTally, Template};
        let blob = "gAAAA".repeat(200);
        let body = json!({"model": "gpt", "input": [
            {"role": "user", "content": "q"},
            {"type": "reasoning", "summary": [], "encrypted_content": blob},
            {"role": "assistant", "content": "a"}],
            "tools": [{"type": "web_search"}, {"type": "function", "name": "f"}]});
        let request = parse_request(body.to_string().as_bytes()).unwrap();
        let equivalent = request.chat_equivalent();
        let messages = equivalent["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert!(
            messages[2]["content"].as_str().unwrap().contains(&blob)
                && messages[2]["content"].as_str().unwrap().contains("web_search")
        );
        let template = Template::for_endpoint("databricks-gpt-5-1");
        let translated = request.to_chat(None).unwrap().body;
        assert!(
            PromptTally::of(Kind::Chat, &equivalent).bound(&template)
                > PromptTally::of(Kind::Chat, &translated).bound(&template) + 1000
        );
        // A request the translation refuses is still counted.
        let forced = json!({"model": "gpt", "input": "q", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}});
        let equivalent = parse_request(forced.to_string().as_bytes()).unwrap().chat_equivalent();
        assert!(equivalent["messages"][0]["content"].as_str().unwrap().contains("web_search"));
    }

    #[test]
    fn parameters_map_to_chat_and_the_rest_is_named() {
        let body = json!({"model": "m", "input": "x", "temperature": 0.2, "top_p": 0.9, "max_output_tokens": 900,
            "reasoning": {"effort": "none"},
            "text": {"format": {"type": "json_schema", "name": "answer", "strict": true,
                                "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
                     "verbosity": "low"},
            "parallel_tool_calls": false, "truncation": "auto", "top_logprobs": 2, "metadata": {"k": "v"}, "user": "u"});
        let request = parse_request(body.to_string().as_bytes()).unwrap();
        let t = request.to_chat(Some(100)).unwrap();
        assert_eq!(
            Value::Object(t.body),
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100,
                   "temperature": 0.2, "top_p": 0.9,
                   "response_format": {"type": "json_schema", "json_schema": {"name": "answer",
                       "schema": {"type": "object", "properties": {"a": {"type": "string"}}}, "strict": true}}})
        );
        let warned: Vec<&str> = ["text.verbosity", "parallel_tool_calls", "truncation", "top_logprobs"].to_vec();
        assert_eq!(t.warnings.len(), warned.len(), "{:?}", t.warnings);
        for (w, field) in t.warnings.iter().zip(warned) {
            assert!(w.contains(field), "{w} / {field}");
        }
        assert_eq!(request.to_chat(Some(5000)).unwrap().body["max_tokens"], 900, "a cap never raises");
        let json_mode = translate(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}));
        assert_eq!(json_mode.body["response_format"], json!({"type": "json_object"}));
        let plain = translate(json!({"model": "m", "input": "x", "text": {"format": {"type": "text"}}}));
        assert!(!plain.body.contains_key("response_format") && plain.warnings.is_empty());
    }
}
