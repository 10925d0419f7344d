//! Everything Databricks-specific: request translation, answer and chunk normalisation
//! (reasoning content lists, served-model names), and the mapping of its error bodies.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::family::Family;
use crate::json;
use crate::openai::{ApiError, ErrorKind, Kind, Usage};

/// `https://host/serving-endpoints` → `https://host`: OAuth's token endpoint is at the
/// workspace root.
pub fn workspace_root(api_base: &str) -> String {
    let after_scheme = api_base.find("://").map_or(0, |i| i + 3);
    match api_base[after_scheme..].find('/') {
        Some(slash) => api_base[..after_scheme + slash].to_string(),
        None => api_base.trim_end_matches('/').to_string(),
    }
}

/// How long an OAuth token is used, in seconds, of the `expires_in` Databricks gave it: until
/// a minute before it expires (as LiteLLM), but at least half its life for short-lived ones.
pub fn oauth_usable_s(expires_in_s: u64) -> u64 {
    const EXPIRY_MARGIN_S: u64 = 60;
    expires_in_s.saturating_sub(EXPIRY_MARGIN_S).max(expires_in_s / 2)
}

/// `{api_base}/{route}`, tolerating a trailing slash on the base.
pub fn url(api_base: &str, route: &str) -> String {
    format!("{}/{route}", api_base.trim_end_matches('/'))
}

/// Turns a client's body into the body `endpoint` expects, in place. Each attempt prepares
/// its own copy: a fallback to another model family gets its own translation. `output_cap` is
/// a `max_tokens` a budget imposed: the translation must not raise it.
pub fn prepare_body(kind: Kind, body: &mut Map<String, Value>, endpoint: &str, stream: bool, output_cap: Option<u64>) {
    match kind {
        Kind::Chat => {
            map_reasoning_effort(body, endpoint, output_cap);
            map_thinking(body, endpoint);
            prepare_chat_body(body, endpoint, stream);
            return_thinking_blocks(body);
            drop_litellm_message_fields(body);
            place_cache_control(body, endpoint);
        }
        Kind::Completion => {
            body.insert("model".into(), Value::String(endpoint.to_string()));
            if stream {
                ask_for_usage(body);
            }
        }
        Kind::Embedding => {
            body.insert("model".into(), Value::String(endpoint.to_string()));
        }
    }
}

/// Top-level fields `prepare_body` reads or changes; it leaves every other one as it is.
const PREPARED_FIELDS: [&str; 7] =
    ["model", "messages", "max_tokens", "max_completion_tokens", "stream_options", "thinking", "reasoning_effort"];

/// The JSON body `endpoint` gets for one attempt: exactly `serde_json::to_vec` of what
/// [`prepare_body`] makes of a copy of `body`, but without copying what the translation leaves
/// alone (the messages, unless one carries LiteLLM's fields or thinking blocks; tools; schemas):
/// those are written straight from the client's body.
pub fn prepared_payload(
    kind: Kind,
    body: &Map<String, Value>,
    endpoint: &str,
    stream: bool,
    output_cap: Option<u64>,
) -> Vec<u8> {
    let copy_messages = kind == Kind::Chat && messages_need_changes(body);
    // The fields written from the client's body: in the copy, a null holds their place (and
    // so their position, which the translation's removals and insertions may move).
    let mut kept: Vec<&str> = Vec::new();
    let mut copy = Map::new();
    for (name, value) in body {
        let large = matches!(value, Value::Array(_) | Value::Object(_));
        let leave = large && (!PREPARED_FIELDS.contains(&name.as_str()) || (name == "messages" && !copy_messages));
        if leave {
            kept.push(name);
            copy.insert(name.clone(), Value::Null);
        } else {
            copy.insert(name.clone(), value.clone());
        }
    }
    prepare_body(kind, &mut copy, endpoint, stream, output_cap);
    let mut out = Vec::with_capacity(256);
    let entries = copy.iter().map(|(name, value)| match kept.contains(&name.as_str()) {
        true => (name, body.get(name).unwrap_or(value)),
        false => (name, value),
    });
    crate::json::write_entries(&mut out, entries);
    out
}

/// Whether the translation changes any message: thinking blocks to turn back into reasoning
/// parts, LiteLLM's fields to remove, a message-level `cache_control` to place (see
/// `return_thinking_blocks`, `drop_litellm_message_fields`, `place_cache_control`).
fn messages_need_changes(body: &Map<String, Value>) -> bool {
    let Some(Value::Array(messages)) = body.get("messages") else { return false };
    let has_own_fields = |v: &Value| v.as_object().is_some_and(|o| o.contains_key("provider_specific_fields"));
    messages.iter().filter_map(Value::as_object).any(|message| {
        message.iter().any(|(name, value)| match name.as_str() {
            "thinking_blocks" | "cache_control" => true,
            field if LITELLM_MESSAGE_FIELDS.contains(&field) => true,
            "tool_calls" => value.as_array().into_iter().flatten().any(|call| {
                has_own_fields(call) || call.as_object().and_then(|c| c.get("function")).is_some_and(has_own_fields)
            }),
            _ => false,
        })
    })
}

fn is_claude(endpoint: &str) -> bool {
    Family::of(endpoint) == Family::Claude
}

/// The `max_tokens` the request carries to `endpoint` once translated: the client's
/// (`max_completion_tokens` winning), or, on Claude with `reasoning_effort`, room for the
/// thinking budget on top of it. What a budget must hold for the output.
pub fn upstream_max_tokens(kind: Kind, body: &Map<String, Value>, endpoint: &str) -> Option<u64> {
    let asked = ["max_completion_tokens", "max_tokens"].iter().find_map(|f| body.get(*f).and_then(Value::as_u64));
    if kind != Kind::Chat || !is_claude(endpoint) || body.contains_key("thinking") {
        return asked;
    }
    match body.get("reasoning_effort").and_then(Value::as_str).and_then(thinking_budget) {
        // The answer keeps the room the client asked for on top of the thinking.
        Some(budget) if asked.is_none_or(|m| m <= budget) => {
            Some(budget.saturating_add(asked.unwrap_or(DEFAULT_ANSWER_TOKENS)))
        }
        _ => asked,
    }
}

/// Thinking budgets for `reasoning_effort` on Claude endpoints, as LiteLLM maps them.
fn thinking_budget(effort: &str) -> Option<u64> {
    match effort {
        "minimal" | "low" => Some(1024),
        "medium" => Some(2048),
        "high" => Some(4096),
        _ => None,
    }
}

/// Claude's smallest thinking budget.
const MIN_THINKING_BUDGET: u64 = 1024;

/// Claude endpoints take `thinking` rather than `reasoning_effort`: the effort becomes a
/// thinking budget, and `max_tokens` is raised above it when needed (Claude requires
/// `budget_tokens < max_tokens`). A `thinking` the client sent wins and passes through. Under
/// an imposed `output_cap` the thinking fits inside it, or is left out when it cannot.
fn map_reasoning_effort(body: &mut Map<String, Value>, endpoint: &str, output_cap: Option<u64>) {
    if !is_claude(endpoint) || body.contains_key("thinking") {
        return;
    }
    let max_tokens = upstream_max_tokens(Kind::Chat, body, endpoint);
    let Some(effort) = body.remove("reasoning_effort") else { return };
    let Some(budget) = effort.as_str().and_then(thinking_budget) else { return };
    let (budget, max_tokens) = match output_cap {
        Some(cap) if cap <= MIN_THINKING_BUDGET => return,
        Some(cap) => (budget.min(cap - 1), Some(cap)),
        None => (budget, max_tokens),
    };
    body.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    if let Some(max_tokens) = max_tokens {
        body.remove("max_completion_tokens");
        body.insert("max_tokens".into(), max_tokens.into());
    }
}

/// A Claude-style `thinking` sent to an OpenAI reasoning model becomes the `reasoning_effort`
/// its budget corresponds to; Databricks refuses `thinking` there.
fn map_thinking(body: &mut Map<String, Value>, endpoint: &str) {
    if is_claude(endpoint) || !Family::of(endpoint).takes_reasoning_effort() {
        return;
    }
    let Some(thinking) = body.remove("thinking") else { return };
    if body.contains_key("reasoning_effort") || thinking.get("type").and_then(Value::as_str) != Some("enabled") {
        return;
    }
    let effort = match thinking.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0) {
        0..=1024 => "low",
        1025..=2048 => "medium",
        _ => "high",
    };
    body.insert("reasoning_effort".into(), effort.into());
}

/// Room left for the answer when a thinking budget forces a `max_tokens` the client did not set.
const DEFAULT_ANSWER_TOKENS: u64 = 4096;

/// An assistant turn sent back with the `thinking_blocks` (and `reasoning_content`) the gateway
/// gave it becomes Databricks' content list again, signatures included, so that Claude can
/// continue its reasoning across turns.
fn return_thinking_blocks(body: &mut Map<String, Value>) {
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else { return };
    for message in messages.iter_mut().filter_map(Value::as_object_mut) {
        let Some(Value::Array(blocks)) = message.remove("thinking_blocks") else { continue };
        message.remove("reasoning_content");
        let summary: Vec<Value> = blocks
            .iter()
            .filter_map(|b| match b.get("type").and_then(Value::as_str) {
                Some("thinking") => Some(json!({
                    "type": "summary_text",
                    "text": b.get("thinking").cloned().unwrap_or(Value::String(String::new())),
                    "signature": b.get("signature").cloned().unwrap_or(Value::String(String::new())),
                })),
                Some("redacted_thinking") => Some(json!({"type": "summary_encrypted_text", "data": b.get("data")})),
                _ => None,
            })
            .collect();
        let mut parts = vec![json!({"type": "reasoning", "summary": summary})];
        match message.remove("content") {
            Some(Value::String(text)) if !text.is_empty() => parts.push(json!({"type": "text", "text": text})),
            Some(Value::Array(existing)) => parts.extend(existing),
            _ => {}
        }
        message.insert("content".into(), Value::Array(parts));
    }
}

/// A `cache_control` set on a whole message (LiteLLM's form, and the only place a string content
/// can carry one) goes where Claude reads it: on the message's last content part, a string
/// content becoming a one-part list, since Databricks takes `cache_control` only inside a
/// content array. Other families cache implicitly and have no such field: it is left out.
fn place_cache_control(body: &mut Map<String, Value>, endpoint: &str) {
    let claude = is_claude(endpoint);
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else { return };
    for message in messages.iter_mut().filter_map(Value::as_object_mut) {
        let Some(cache) = message.remove("cache_control") else { continue };
        if !claude || cache.is_null() {
            continue;
        }
        match message.get_mut("content") {
            Some(Value::String(text)) if !text.is_empty() => {
                let text = std::mem::take(text);
                message.insert("content".into(), json!([{"type": "text", "text": text, "cache_control": cache}]));
            }
            Some(Value::Array(parts)) => {
                if let Some(last) = parts.last_mut().and_then(Value::as_object_mut) {
                    last.entry("cache_control").or_insert(cache);
                }
            }
            _ => {}
        }
    }
}

/// What the LiteLLM SDK attaches to the messages it returns, and sends back when a client keeps
/// them as history. Databricks refuses unknown fields; LiteLLM's own Databricks provider removes
/// these. (`thinking_blocks` are turned back into reasoning parts above.)
const LITELLM_MESSAGE_FIELDS: [&str; 3] = ["provider_specific_fields", "reasoning_items", "reasoning_content"];

fn drop_litellm_message_fields(body: &mut Map<String, Value>) {
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else { return };
    for message in messages.iter_mut().filter_map(Value::as_object_mut) {
        for field in LITELLM_MESSAGE_FIELDS {
            message.remove(field);
        }
        let calls = message.get_mut("tool_calls").and_then(Value::as_array_mut).into_iter().flatten();
        for call in calls.filter_map(Value::as_object_mut) {
            call.remove("provider_specific_fields");
            if let Some(function) = call.get_mut("function").and_then(Value::as_object_mut) {
                function.remove("provider_specific_fields");
            }
        }
    }
}

/// Parameters Databricks takes, per endpoint kind; `drop_params` removes the others.
fn supported(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Chat => &[
            "model",
            "messages",
            "stream",
            "stream_options",
            "stop",
            "temperature",
            "top_p",
            "top_k",
            "max_tokens",
            "n",
            "response_format",
            "tools",
            "tool_choice",
            "logprobs",
            "top_logprobs",
            "reasoning_effort",
            "thinking",
        ],
        Kind::Completion => &[
            "model",
            "prompt",
            "stream",
            "stream_options",
            "stop",
            "temperature",
            "top_p",
            "top_k",
            "max_tokens",
            "n",
            "logprobs",
        ],
        Kind::Embedding => &["model", "input", "instruction"],
    }
}

/// LiteLLM's request-level switches never go upstream. With `drop_params` (from the config, or
/// `true` in the request) every parameter Databricks does not take is removed, and those in
/// the request's `additional_drop_params` in any case. Returns the names removed.
pub fn drop_params(kind: Kind, body: &mut Map<String, Value>, configured: bool) -> Vec<String> {
    let asked = body.remove("drop_params").and_then(|v| v.as_bool()).unwrap_or(false);
    let mut dropped: Vec<String> = Vec::new();
    if let Some(Value::Array(extra)) = body.remove("additional_drop_params") {
        for name in extra.iter().filter_map(Value::as_str) {
            if body.remove(name).is_some() {
                dropped.push(name.to_string());
            }
        }
    }
    if configured || asked {
        let keep = supported(kind);
        let unsupported: Vec<String> = body.keys().filter(|k| !keep.contains(&k.as_str())).cloned().collect();
        for name in unsupported {
            body.remove(&name);
            dropped.push(name);
        }
    }
    dropped
}

fn ask_for_usage(body: &mut Map<String, Value>) {
    let options = body.entry("stream_options").or_insert_with(|| json!({}));
    if let Value::Object(options) = options {
        options.insert("include_usage".into(), Value::Bool(true));
    } else {
        *options = json!({"include_usage": true});
    }
}

/// Turns a client's chat body into the body Databricks expects, in place.
pub fn prepare_chat_body(body: &mut Map<String, Value>, endpoint: &str, stream: bool) {
    body.insert("model".into(), Value::String(endpoint.to_string()));
    // Databricks knows only `max_tokens`; the newer OpenAI name wins when both are given.
    if let Some(max) = body.remove("max_completion_tokens") {
        if !max.is_null() {
            body.insert("max_tokens".into(), max);
        }
    }
    if stream {
        // Usage is needed to account for a stream; some Claude paths only send it when asked.
        ask_for_usage(body);
    }
}

/// A Databricks answer of any kind as the client sees it, with its usage.
pub fn normalize_answer(kind: Kind, body: &[u8], model: &str, base64: bool) -> Result<Answer, ApiError> {
    match kind {
        Kind::Chat => normalize_chat_completion(body, model),
        Kind::Completion => normalize_list_answer(body, model, "choices", |_| Ok(())),
        Kind::Embedding => normalize_list_answer(body, model, "data", |item| {
            if base64 {
                encode_embedding(item)?;
            }
            Ok(())
        }),
    }
}

/// An answer whose `field` is a list: `model` renamed, each item passed to `each`.
fn normalize_list_answer(
    body: &[u8],
    model: &str,
    field: &str,
    each: impl Fn(&mut Value) -> Result<(), ApiError>,
) -> Result<Answer, ApiError> {
    let mut answer = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(answer)) => answer,
        _ => return Err(ApiError::bad_gateway("Databricks returned a malformed answer (not a JSON object)")),
    };
    let Some(items) = answer.get_mut(field).and_then(Value::as_array_mut) else {
        return Err(ApiError::bad_gateway(format!("Databricks returned a malformed answer (no {field})")));
    };
    for item in items {
        each(item)?;
    }
    answer.insert("model".into(), Value::String(model.to_string()));
    let usage = Usage::from_value(answer.get("usage"));
    let id = answer.get("id").and_then(Value::as_str).map(str::to_string);
    Ok(Answer { bytes: crate::json::map_to_vec(&answer), usage, id })
}

/// An embedding as OpenAI's base64: the vector's little-endian 32-bit floats.
fn encode_embedding(item: &mut Value) -> Result<(), ApiError> {
    let malformed = || ApiError::bad_gateway("Databricks returned a malformed embedding");
    let vector = item.get("embedding").and_then(Value::as_array).ok_or_else(malformed)?;
    let mut bytes = Vec::with_capacity(vector.len() * 4);
    for x in vector {
        bytes.extend_from_slice(&(x.as_f64().ok_or_else(malformed)? as f32).to_le_bytes());
    }
    item["embedding"] = Value::String(crate::base64::standard(&bytes));
    Ok(())
}

/// A chat answer ready for the client.
#[derive(Debug)]
pub struct Answer {
    pub bytes: Vec<u8>,
    pub usage: Option<Usage>,
    /// The answer's id (`chatcmpl_...`).
    pub id: Option<String>,
}

/// A Databricks chat answer as the client sees it, with its usage.
pub fn normalize_chat_completion(body: &[u8], model_group: &str) -> Result<Answer, ApiError> {
    let mut answer = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(answer)) => answer,
        _ => return Err(ApiError::bad_gateway("Databricks returned a malformed answer (not a JSON object)")),
    };
    if !answer.get("choices").is_some_and(Value::is_array) {
        return Err(ApiError::bad_gateway("Databricks returned a malformed answer (no choices)"));
    }
    answer.insert("model".into(), Value::String(model_group.to_string()));
    for choice in choices_mut(&mut answer) {
        if let Some(message) = choice.get_mut("message").and_then(Value::as_object_mut) {
            flatten_content(message, false);
        }
    }
    let usage = Usage::from_value(answer.get("usage"));
    let id = answer.get("id").and_then(Value::as_str).map(str::to_string);
    Ok(Answer { bytes: crate::json::map_to_vec(&answer), usage, id })
}

/// What one normalised stream chunk says about the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    Data(StreamChunk),
    /// The upstream reported an error inside the stream.
    Error(ApiError),
    /// The payload is not a JSON object.
    Malformed,
}

/// One stream chunk as the client sees it, and what it says about the stream.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamChunk {
    /// The chunk without `usage`: the relay shows usage only to a client that asked for it.
    pub chunk: Map<String, Value>,
    /// The upstream's `usage` object, as it came (cumulative on Databricks).
    pub usage: Option<Value>,
    /// True once a choice carried a `finish_reason`.
    pub finished: bool,
    /// The content and reasoning characters it carries.
    pub generated_chars: u64,
}

/// Normalises one `data:` payload of a Databricks chat (or legacy completions) stream.
pub fn normalize_chunk(data: &str, model_group: &str, secrets: &[&str]) -> Chunk {
    let mut chunk = match json::from_str::<Value>(data) {
        Ok(Value::Object(chunk)) => chunk,
        _ => return Chunk::Malformed,
    };
    if !chunk.contains_key("choices") && (chunk.contains_key("error") || chunk.contains_key("error_code")) {
        return Chunk::Error(upstream_error(500, data.as_bytes(), secrets));
    }
    chunk.insert("model".into(), Value::String(model_group.to_string()));
    let (mut finished, mut generated_chars) = (false, 0);
    for choice in choices_mut(&mut chunk) {
        normalize_choice(choice, &mut finished, &mut generated_chars);
    }
    let usage = chunk.remove("usage").filter(Value::is_object);
    Chunk::Data(StreamChunk { chunk, usage, finished, generated_chars })
}

/// One choice of a stream chunk as the client sees it; notes whether it finished and the
/// characters it generated.
fn normalize_choice(choice: &mut Map<String, Value>, finished: &mut bool, generated_chars: &mut u64) {
    *finished |= choice.get("finish_reason").is_some_and(|r| !r.is_null());
    if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
        flatten_content(delta, true);
        drop_nulls(delta);
        for field in ["content", "reasoning_content"] {
            *generated_chars += delta.get(field).and_then(Value::as_str).map_or(0, |t| t.chars().count() as u64);
        }
        // A tool call's name and arguments are generated tokens too.
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            for text in [&call["function"]["name"], &call["function"]["arguments"]] {
                *generated_chars += text.as_str().map_or(0, |t| t.chars().count() as u64);
            }
        }
    }
    // Legacy completions stream their text on the choice itself.
    *generated_chars += choice.get("text").and_then(Value::as_str).map_or(0, |t| t.chars().count() as u64);
}

/// One stream chunk normalised as [`normalize_chunk`] normalises it, without building the
/// whole chunk as a `Value`: only its `choices` are; its other fields stay the text they
/// came as when serde_json would write them back unchanged (plain strings, integers,
/// literals), and its `usage` stays text until it is read.
#[derive(Debug)]
pub struct ChunkFields<'a> {
    /// The chunk's fields in the order `normalize_chunk`'s map has them (model replaced,
    /// `usage` taken out).
    pub fields: Vec<(Cow<'a, str>, Field<'a>)>,
    /// The upstream's `usage` object, as it came.
    pub usage: Option<&'a str>,
    pub finished: bool,
    pub generated_chars: u64,
}

#[derive(Debug)]
pub enum Field<'a> {
    /// JSON text that serde_json would write back byte for byte.
    Text(&'a str),
    Value(Value),
}

impl Field<'_> {
    pub fn to_value(&self) -> Value {
        match self {
            Field::Text(text) => json::from_str(text).unwrap_or(Value::Null),
            Field::Value(value) => value.clone(),
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Field::Text(text) => out.extend_from_slice(text.as_bytes()),
            Field::Value(value) => crate::json::write_value(out, value),
        }
    }
}

impl ChunkFields<'_> {
    pub fn get(&self, name: &str) -> Option<&Field<'_>> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }

    /// `Map::insert`: a field already there keeps its place.
    pub fn insert(&mut self, name: &'static str, field: Field<'static>) {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some((_, f)) => *f = field,
            None => self.fields.push((Cow::Borrowed(name), field)),
        }
    }

    /// The chunk as compact JSON, as `normalize_chunk`'s map would be written.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (name, field)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            crate::json::write_str(out, name);
            out.push(b':');
            field.write(out);
        }
        out.push(b'}');
    }
}

/// The fast way to [`normalize_chunk`]'s result, for chunks with `choices`; `None` for any
/// other (errors, malformed data, odd shapes), which take the slow way.
pub fn normalize_chunk_fields<'a>(data: &'a str, model_group: &str) -> Option<ChunkFields<'a>> {
    // Through `from_slice`'s reader, as every JSON text the gateway reads (see `json`).
    let TopLevel(raw) = serde_json::from_slice(data.as_bytes()).ok()?;
    if !raw.iter().any(|(name, _)| name == "choices") {
        return None;
    }
    let mut fields = Vec::with_capacity(raw.len() + 1);
    for (name, value) in raw {
        let text = value.get();
        let field = match &*name {
            "choices" => Field::Value(json::from_str(text).ok()?),
            "usage" | "model" => Field::Text(text),
            _ if writes_back_unchanged(text) => Field::Text(text),
            _ => Field::Value(json::from_str(text).ok()?),
        };
        fields.push((name, field));
    }
    let mut chunk = ChunkFields { fields, usage: None, finished: false, generated_chars: 0 };
    // In `normalize_chunk`'s order: the model, the choices, then `usage` out (swapped out).
    chunk.insert("model", Field::Value(Value::String(model_group.to_string())));
    if let Some((_, Field::Value(Value::Array(choices)))) = chunk.fields.iter_mut().find(|(n, _)| n == "choices") {
        for choice in choices.iter_mut().filter_map(Value::as_object_mut) {
            normalize_choice(choice, &mut chunk.finished, &mut chunk.generated_chars);
        }
    }
    if let Some(i) = chunk.fields.iter().position(|(n, _)| n == "usage") {
        if let (_, Field::Text(text)) = chunk.fields.swap_remove(i) {
            chunk.usage = Some(text).filter(|t| t.starts_with('{'));
        }
    }
    Some(chunk)
}

/// Whether serde_json writes this JSON text back byte for byte once parsed: `null`, `true`,
/// `false`, a string without escapes (it holds no quote, backslash or control character), or
/// a non-negative integer of at most 19 digits (below `u64::MAX`, written back as it came).
fn writes_back_unchanged(text: &str) -> bool {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'"') => !bytes.contains(&b'\\'),
        Some(b'0'..=b'9') => bytes.len() <= 19 && bytes.iter().all(u8::is_ascii_digit),
        _ => matches!(text, "null" | "true" | "false"),
    }
}

/// A JSON object's fields in order, each value as its text. A repeated field keeps its first
/// place and its last value, as serde_json's map does. Refuses objects of more than 64 fields
/// (looking a repeat up is linear), which take the slow way.
struct TopLevel<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = TopLevel<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel<'de>, A::Error> {
                let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(8);
                while let Some(FieldName(name)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    match fields.iter().position(|(n, _)| *n == name) {
                        Some(i) => fields[i].1 = value,
                        None if fields.len() < 64 => fields.push((name, value)),
                        None => return Err(serde::de::Error::custom("too many fields")),
                    }
                }
                Ok(TopLevel(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// A field name, borrowed from the input unless it had escapes.
struct FieldName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> Visitor<'de> for Name {
            type Value = FieldName<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(Cow::Borrowed(name)))
            }

            fn visit_str<E>(self, name: &str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(Cow::Owned(name.to_string())))
            }

            fn visit_string<E>(self, name: String) -> Result<FieldName<'de>, E> {
                Ok(FieldName(Cow::Owned(name)))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// OpenAI leaves out of a delta what it does not carry. Databricks sends such keys as null (every
/// tool-call fragment after the first has `"id": null, "type": null, "function": {"name":
/// null}`), and the SDKs' delta merging takes a null as a value: the OpenAI Python SDK's
/// `chat.completions.stream` overwrites the call's `type` with it and fails.
fn drop_nulls(delta: &mut Map<String, Value>) {
    delta.retain(|_, v| !v.is_null());
    let calls = delta.get_mut("tool_calls").and_then(Value::as_array_mut).into_iter().flatten();
    for call in calls.filter_map(Value::as_object_mut) {
        call.retain(|_, v| !v.is_null());
        if let Some(function) = call.get_mut("function").and_then(Value::as_object_mut) {
            function.retain(|_, v| !v.is_null());
        }
    }
}

fn choices_mut(answer: &mut Map<String, Value>) -> impl Iterator<Item = &mut Map<String, Value>> {
    answer.get_mut("choices").and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut)
}

/// Replaces a reasoning content list with `content` (the joined text parts),
/// `reasoning_content` (the joined summaries) and `thinking_blocks`, as LiteLLM does.
/// In a stream delta, a list without text parts leaves no `content` key at all.
fn flatten_content(message: &mut Map<String, Value>, is_delta: bool) {
    let parts = match message.get("content") {
        Some(Value::Array(parts)) => parts,
        _ => return,
    };
    let mut text: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut blocks: Vec<Value> = Vec::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = part.get("text").and_then(Value::as_str).unwrap_or("");
                text.get_or_insert_with(String::new).push_str(t);
            }
            Some("reasoning") => {
                for summary in part.get("summary").and_then(Value::as_array).into_iter().flatten() {
                    match summary.get("type").and_then(Value::as_str) {
                        Some("summary_text") => {
                            let t = summary.get("text").and_then(Value::as_str).unwrap_or("");
                            if !t.is_empty() {
                                reasoning.get_or_insert_with(String::new).push_str(t);
                            }
                            let mut block = json!({"type": "thinking", "thinking": t});
                            if let Some(sig) =
                                summary.get("signature").and_then(Value::as_str).filter(|s| !s.is_empty())
                            {
                                block["signature"] = Value::String(sig.to_string());
                            }
                            blocks.push(block);
                        }
                        Some("summary_encrypted_text") => {
                            let data = summary.get("data").cloned().unwrap_or(Value::Null);
                            blocks.push(json!({"type": "redacted_thinking", "data": data}));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    match text {
        Some(t) => {
            message.insert("content".into(), Value::String(t));
        }
        None if is_delta => {
            message.remove("content");
        }
        None => {
            message.insert("content".into(), Value::Null);
        }
    }
    if let Some(r) = reasoning {
        message.insert("reasoning_content".into(), Value::String(r));
    }
    if !blocks.is_empty() {
        message.insert("thinking_blocks".into(), Value::Array(blocks));
    }
}

/// Databricks did not answer within `timeout_ms` (a deployment's timeout, or what was left of
/// `router_settings.timeout`).
pub fn timed_out(timeout_ms: u64) -> ApiError {
    ApiError::gateway_timeout(format!(
        "Databricks did not answer within the configured timeout of {} s; the request was aborted.",
        timeout_ms as f64 / 1000.0
    ))
}

/// Maps a Databricks error answer to the client's error, keeping its status and message.
/// `secrets` (our token) are scrubbed from the message, as is anything shaped like a PAT.
pub fn upstream_error(status: u16, body: &[u8], secrets: &[&str]) -> ApiError {
    let (code, message) = error_parts(body);
    let message = match message {
        Some(m) => m,
        None if body.is_empty() => "no error body".to_string(),
        None => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("non-JSON error body: {}", truncate(&text, 300))
        }
    };
    let code = code.map(|c| format!(" {c}")).unwrap_or_default();
    let message = redact(&format!("Databricks returned {status}{code}: {message}"), secrets);
    if (400..=599).contains(&status) {
        ApiError::new(status, ErrorKind::for_status(status), message)
    } else {
        ApiError::bad_gateway(message)
    }
}

/// `error_code` and `message` of a Databricks body, or of an OpenAI-shaped one.
fn error_parts(body: &[u8]) -> (Option<String>, Option<String>) {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return (None, None),
    };
    let code = match v.get("error_code") {
        Some(Value::String(c)) => Some(c.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let message = v
        .get("message")
        .or_else(|| v.get("error").and_then(|e| e.get("message")))
        .or_else(|| v.get("error").filter(|e| e.is_string()))
        .and_then(Value::as_str)
        .map(|m| {
            // Claude endpoints put their own error JSON in the message as a string.
            match json::from_str::<Value>(m) {
                Ok(inner) => {
                    inner.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| m.to_string())
                }
                Err(_) => m.to_string(),
            }
        });
    (code, message)
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Removes the given secrets and any Databricks personal access token (`dapi` + 32 or more
/// alphanumerics, LiteLLM's pattern) from a message.
pub fn redact(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "[REDACTED]");
    }
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("dapi") {
        let tail = &rest[i + 4..];
        let run = tail.bytes().take_while(u8::is_ascii_alphanumeric).count();
        result.push_str(&rest[..i]);
        if run >= 32 {
            result.push_str("[REDACTED]");
            rest = &tail[run..];
        } else {
            result.push_str("dapi");
            rest = tail;
        }
    }
    result.push_str(rest);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn cache_control_on_a_message_moves_into_its_content_on_claude() {
        let cache = json!({"type": "ephemeral"});
        let body = obj(json!({"model": "m", "messages": [
            {"role": "system", "content": "Long instructions", "cache_control": cache},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "cache_control": cache},
            {"role": "user", "content": [{"type": "text", "text": "c", "cache_control": {"type": "ephemeral", "ttl": "1h"}}], "cache_control": cache},
            {"role": "assistant", "content": "", "cache_control": cache},
            {"role": "user", "content": [{"type": "text", "text": "d", "cache_control": cache}]},
        ]}));
        let mut claude = body.clone();
        prepare_body(Kind::Chat, &mut claude, "databricks-claude-sonnet-4-5", false, None);
        assert_eq!(
            claude["messages"],
            json!([
                {"role": "system", "content": [{"type": "text", "text": "Long instructions", "cache_control": cache}]},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": cache}]},
                {"role": "user", "content": [{"type": "text", "text": "c", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": [{"type": "text", "text": "d", "cache_control": cache}]},
            ])
        );
        // Families that cache implicitly get no message-level field (parts pass as they came).
        let mut gpt = body.clone();
        prepare_body(Kind::Chat, &mut gpt, "databricks-gpt-5-1", false, None);
        let messages = gpt["messages"].as_array().unwrap();
        assert!(messages.iter().all(|m| m.get("cache_control").is_none()), "{gpt:?}");
        assert_eq!(messages[0]["content"], "Long instructions");
        assert_eq!(messages[4]["content"][0]["cache_control"], cache);
    }

    #[test]
    fn request_gets_the_endpoint_and_max_tokens() {
        let mut body =
            obj(json!({"model": "databricks-gpt-5-1", "messages": [], "max_completion_tokens": 9, "foo": 1}));
        prepare_chat_body(&mut body, "databricks-gpt-5-1-endpoint", false);
        assert_eq!(
            Value::Object(body),
            json!({"model": "databricks-gpt-5-1-endpoint", "messages": [], "max_tokens": 9, "foo": 1})
        );
    }

    #[test]
    fn streams_ask_for_usage_and_keep_client_options() {
        let mut body = obj(json!({"stream": true, "stream_options": {"other": 1}}));
        prepare_chat_body(&mut body, "e", true);
        assert_eq!(body["stream_options"], json!({"other": 1, "include_usage": true}));
        let mut body = obj(json!({"stream": true, "stream_options": null}));
        prepare_chat_body(&mut body, "e", true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn answers_carry_the_requested_model_and_usage() {
        let raw = br#"{"id":"chatcmpl_1","object":"chat.completion","created":1,"model":"served-x","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","tool_calls":null},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":4,"completion_tokens":5,"total_tokens":9},"system_fingerprint":null}"#;
        let Answer { bytes, usage, id } = normalize_chat_completion(raw, "my-model").unwrap();
        assert_eq!(id.as_deref(), Some("chatcmpl_1"));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["model"], "my-model");
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(v["id"], "chatcmpl_1");
        assert_eq!(usage, Some(Usage::plain(4, 5)));
    }

    #[test]
    fn reasoning_lists_become_content_and_reasoning() {
        let raw = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": [
            {"type": "reasoning", "summary": [
                {"type": "summary_text", "text": "Let me ", "signature": ""},
                {"type": "summary_text", "text": "think.", "signature": "sig1"},
                {"type": "summary_encrypted_text", "data": "enc"}]},
            {"type": "text", "text": "The answer "},
            {"type": "text", "text": "is 4.", "citations": []}]}, "finish_reason": "stop"}]});
        let bytes = normalize_chat_completion(raw.to_string().as_bytes(), "m").unwrap().bytes;
        let message = &serde_json::from_slice::<Value>(&bytes).unwrap()["choices"][0]["message"];
        assert_eq!(message["content"], "The answer is 4.");
        assert_eq!(message["reasoning_content"], "Let me think.");
        assert_eq!(
            message["thinking_blocks"],
            json!([
                {"type": "thinking", "thinking": "Let me "},
                {"type": "thinking", "thinking": "think.", "signature": "sig1"},
                {"type": "redacted_thinking", "data": "enc"}
            ])
        );
    }

    /// The exact bytes an answer is relayed as: key order kept, `model` replaced in place,
    /// strings re-escaped as serde_json escapes them, numbers as it prints them.
    #[test]
    fn answers_keep_their_bytes() {
        let raw = r#"{"id": "chatcmpl_1", "object": "chat.completion", "created": 1.0e9, "model": "served",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Hm\u00e9 \"q\"", "signature": "s"}]},
                {"type": "text", "text": "caf\u00e9 \/ \t\u0001 \ud83d\ude80 日本"}], "tool_calls": null},
              "finish_reason": "stop", "logprobs": null, "extra": [1, -2, 0.5, 1e21, true]}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}, "system_fingerprint": null}"#;
        let bytes = normalize_chat_completion(raw.as_bytes(), "my-model").unwrap().bytes;
        let expected = r#"{"id":"chatcmpl_1","object":"chat.completion","created":1000000000.0,"model":"my-model","choices":[{"index":0,"message":{"role":"assistant","content":"café / \t\u0001 🚀 日本","tool_calls":null,"reasoning_content":"Hmé \"q\"","thinking_blocks":[{"type":"thinking","thinking":"Hmé \"q\"","signature":"s"}]},"finish_reason":"stop","logprobs":null,"extra":[1,-2,0.5,1e+21,true]}],"usage":{"prompt_tokens":4,"completion_tokens":5,"total_tokens":9},"system_fingerprint":null}"#;
        assert_eq!(String::from_utf8(bytes).unwrap(), expected);
        let list = br#"{"object":"list","model":"served","data":[{"index":0,"object":"embedding","embedding":[1.0,-2.5,0.1]}],"usage":{"prompt_tokens":3,"total_tokens":3}}"#;
        let bytes = normalize_answer(Kind::Embedding, list, "gte \"x\"", false).unwrap().bytes;
        let expected = r#"{"object":"list","model":"gte \"x\"","data":[{"index":0,"object":"embedding","embedding":[1.0,-2.5,0.1]}],"usage":{"prompt_tokens":3,"total_tokens":3}}"#;
        assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    }

    #[test]
    fn malformed_answers_are_bad_gateway() {
        for raw in [&b"{\"id\": \"x\", \"choices\": ["[..], b"[]", b"{\"id\":1}"] {
            assert_eq!(normalize_chat_completion(raw, "m").unwrap_err().status, 502);
        }
    }

    fn data(chunk: Chunk) -> StreamChunk {
        match chunk {
            Chunk::Data(data) => data,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chunks_are_normalised() {
        let raw = r#"{"id":"c","object":"chat.completion.chunk","model":"served","choices":[{"index":0,"delta":{"content":[{"type":"reasoning","summary":[{"type":"summary_text","text":"Hm","signature":""}]}]},"finish_reason":null}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let StreamChunk { chunk, usage, finished, generated_chars } = data(normalize_chunk(raw, "m", &[]));
        assert_eq!(generated_chars, 2);
        assert_eq!(chunk["model"], "m");
        assert_eq!(chunk["id"], "c");
        assert_eq!(
            chunk["choices"][0]["delta"],
            json!({"reasoning_content": "Hm", "thinking_blocks": [{"type": "thinking", "thinking": "Hm"}]})
        );
        // Usage is the relay's to show or not.
        assert!(!chunk.contains_key("usage"));
        assert_eq!(usage, Some(json!({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4})));
        assert!(!finished);
    }

    #[test]
    fn tool_call_names_and_arguments_count_as_generated() {
        let raw = r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"ci"}}]},"finish_reason":null}]}"#;
        assert_eq!(data(normalize_chunk(raw, "m", &[])).generated_chars, 11 + 4);
    }

    #[test]
    fn tool_call_fragments_leave_out_null_keys_as_openai() {
        let raw = r#"{"id":"c","choices":[{"index":0,"delta":{"role":null,"content":null,"tool_calls":[{"index":0,"id":null,"type":null,"function":{"name":null,"arguments":"{\"ci"}}]},"finish_reason":null,"logprobs":null}]}"#;
        let chunk = data(normalize_chunk(raw, "m", &[])).chunk;
        assert_eq!(
            chunk["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]})
        );
        // The choice keeps OpenAI's explicit nulls (finish_reason, logprobs).
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
        let first = r#"{"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#;
        let chunk = data(normalize_chunk(first, "m", &[])).chunk;
        assert_eq!(chunk["choices"][0]["delta"]["tool_calls"][0]["id"], "call_1");
        assert_eq!(chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "");
    }

    #[test]
    fn odd_chunks_pass_without_error() {
        for raw in [
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        ] {
            assert!(matches!(normalize_chunk(raw, "m", &[]), Chunk::Data(_)), "{raw}");
        }
        let StreamChunk { finished, usage, .. } =
            data(normalize_chunk(r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":null}"#, "m", &[]));
        assert!(finished);
        assert_eq!(usage, None);
        assert_eq!(normalize_chunk("{\"oops\": ", "m", &[]), Chunk::Malformed);
    }

    #[test]
    fn errors_keep_status_and_message() {
        let body = br#"{"error_code":"RESOURCE_DOES_NOT_EXIST","message":"Endpoint with name 'x' does not exist.","details":[]}"#;
        let e = upstream_error(404, body, &[]);
        assert_eq!((e.status, e.kind), (404, ErrorKind::NotFound));
        assert_eq!(
            e.message,
            "Databricks returned 404 RESOURCE_DOES_NOT_EXIST: Endpoint with name 'x' does not exist."
        );
        let e = upstream_error(401, br#"{"error_code":401,"message":"Credential was not sent"}"#, &[]);
        assert_eq!((e.status, e.kind), (401, ErrorKind::Authentication));
        assert!(e.message.contains("401 401: Credential was not sent"));
        let e = upstream_error(
            400,
            br#"{"error_code":"BAD_REQUEST","message":"{\"message\":\"Input is too long for requested model.\"}"}"#,
            &[],
        );
        assert!(e.message.ends_with(": Input is too long for requested model."), "{}", e.message);
        let e = upstream_error(503, b"<html><body>Service  Unavailable</body></html>", &[]);
        assert_eq!((e.status, e.kind), (503, ErrorKind::Api));
        assert!(e.message.contains("non-JSON error body: <html><body>Service Unavailable"));
        assert_eq!(upstream_error(302, b"", &[]).status, 502);
    }

    #[test]
    fn secrets_never_leave_in_error_messages() {
        let token = "dapi0123456789abcdef0123456789abcdef";
        let body = format!(
            r#"{{"error_code":"BAD_REQUEST","message":"bad token {token} and custom-secret-1 and {token}-2"}}"#
        );
        let e = upstream_error(400, body.as_bytes(), &["custom-secret-1"]);
        assert!(!e.message.contains("dapi0123"), "{}", e.message);
        assert!(!e.message.contains("custom-secret-1"));
        assert_eq!(redact("dapi is short dapi123", &[]), "dapi is short dapi123");
    }

    #[test]
    fn reasoning_effort_becomes_a_thinking_budget_on_claude() {
        let mut body = obj(json!({"reasoning_effort": "medium", "max_tokens": 500, "messages": []}));
        prepare_body(Kind::Chat, &mut body, "databricks-claude-sonnet-4-5", false, None);
        assert_eq!(body["thinking"], json!({"type": "enabled", "budget_tokens": 2048}));
        assert_eq!(body["max_tokens"], 2548);
        assert!(!body.contains_key("reasoning_effort"));
        let mut body = obj(json!({"reasoning_effort": "high", "messages": []}));
        prepare_body(Kind::Chat, &mut body, "databricks-claude-sonnet-4-5", false, None);
        assert_eq!(body["max_tokens"], 4096 + 4096);
        // Kept for GPT-5 and gpt-oss; a client's own `thinking` wins.
        let mut body = obj(json!({"reasoning_effort": "low", "messages": []}));
        prepare_body(Kind::Chat, &mut body, "databricks-gpt-5-1", false, None);
        assert_eq!(body["reasoning_effort"], "low");
        let mut body = obj(
            json!({"reasoning_effort": "low", "thinking": {"type": "enabled", "budget_tokens": 5000}, "max_tokens": 9000, "messages": []}),
        );
        prepare_body(Kind::Chat, &mut body, "databricks-claude-sonnet-4-5", false, None);
        assert_eq!(body["thinking"]["budget_tokens"], 5000);
        assert_eq!(body["max_tokens"], 9000);
    }

    #[test]
    fn oauth_tokens_are_replaced_a_minute_before_they_expire() {
        assert_eq!(oauth_usable_s(3600), 3540);
        assert_eq!(oauth_usable_s(120), 60);
        assert_eq!(oauth_usable_s(61), 30, "short-lived: half its life");
        assert_eq!(oauth_usable_s(0), 0);
    }

    #[test]
    fn each_family_gets_its_own_translation() {
        let client =
            obj(json!({"thinking": {"type": "enabled", "budget_tokens": 3000}, "max_tokens": 5000, "messages": []}));
        // Claude keeps `thinking`; GPT gets the matching effort and never `thinking`.
        let mut claude = client.clone();
        prepare_body(Kind::Chat, &mut claude, "databricks-claude-sonnet-4-5", false, None);
        assert_eq!(claude["thinking"]["budget_tokens"], 3000);
        let mut gpt = client.clone();
        prepare_body(Kind::Chat, &mut gpt, "databricks-gpt-5-1", false, None);
        assert!(!gpt.contains_key("thinking"));
        assert_eq!(gpt["reasoning_effort"], "high");
        // `reasoning_effort` never reaches Claude.
        let mut claude = obj(json!({"reasoning_effort": "low", "messages": []}));
        prepare_body(Kind::Chat, &mut claude, "databricks-claude-haiku-4-5", false, None);
        assert!(!claude.contains_key("reasoning_effort"));
    }

    #[test]
    fn an_imposed_max_tokens_is_never_raised_by_the_thinking_budget() {
        let mut body = obj(json!({"reasoning_effort": "high", "max_tokens": 3000, "messages": []}));
        prepare_body(Kind::Chat, &mut body, "databricks-claude-sonnet-4-5", false, Some(3000));
        assert_eq!(body["max_tokens"], 3000);
        assert_eq!(body["thinking"]["budget_tokens"], 2999);
        let mut body = obj(json!({"reasoning_effort": "high", "max_tokens": 900, "messages": []}));
        prepare_body(Kind::Chat, &mut body, "databricks-claude-sonnet-4-5", false, Some(900));
        assert_eq!(body["max_tokens"], 900);
        assert!(!body.contains_key("thinking") && !body.contains_key("reasoning_effort"));
        // What a budget must hold is what the translation sends.
        let client = obj(json!({"reasoning_effort": "medium", "max_tokens": 500, "messages": []}));
        assert_eq!(upstream_max_tokens(Kind::Chat, &client, "databricks-claude-sonnet-4-5"), Some(2548));
        assert_eq!(upstream_max_tokens(Kind::Chat, &client, "databricks-gpt-5-1"), Some(500));
        let newer = obj(json!({"max_completion_tokens": 7, "max_tokens": 9}));
        assert_eq!(upstream_max_tokens(Kind::Chat, &newer, "x"), Some(7));
    }

    #[test]
    fn thinking_blocks_go_back_as_reasoning_parts() {
        let mut body = obj(json!({"messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "reasoning_content": "hm", "thinking_blocks": [{"type": "thinking", "thinking": "hm", "signature": "s1"}]},
            {"role": "user", "content": "q2"}]}));
        prepare_body(Kind::Chat, &mut body, "databricks-claude-sonnet-4-5", false, None);
        assert_eq!(
            body["messages"][1],
            json!({"role": "assistant", "content": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "hm", "signature": "s1"}]},
                {"type": "text", "text": "a"}]})
        );
        assert_eq!(body["messages"][0], json!({"role": "user", "content": "q"}));
    }

    #[test]
    fn litellm_fields_are_not_forwarded() {
        let mut body = obj(json!({"messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": null, "provider_specific_fields": {"refusal": null},
             "reasoning_content": "hm", "reasoning_items": [],
             "tool_calls": [{"id": "c1", "type": "function", "provider_specific_fields": {},
                             "function": {"name": "f", "arguments": "{}", "provider_specific_fields": null}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"}]}));
        prepare_body(Kind::Chat, &mut body, "databricks-gpt-5-1", false, None);
        assert_eq!(
            body["messages"][1],
            json!({"role": "assistant", "content": null,
                   "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
        );
        assert_eq!(body["messages"][2], json!({"role": "tool", "tool_call_id": "c1", "content": "r"}));
    }

    /// `prepared_payload` writes what encoding a prepared copy writes, for every translation.
    #[test]
    fn prepared_payloads_are_the_prepared_copy_encoded() {
        let tool_call = |extra: Value| {
            let mut call = json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
            for (k, v) in extra.as_object().unwrap() {
                if k == "function_extra" {
                    call["function"]["provider_specific_fields"] = v.clone();
                } else {
                    call[k] = v.clone();
                }
            }
            call
        };
        let messages = [
            json!([{"role": "user", "content": "q"}]),
            json!([{"role": "system", "content": [{"type": "text", "text": "s"}]}, {"role": "user", "content": "q"}]),
            json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "hm",
                    "thinking_blocks": [{"type": "thinking", "thinking": "hm", "signature": "s1"}, {"type": "redacted_thinking", "data": "d"}]},
                   {"role": "user", "content": "q2"}]),
            json!([{"role": "assistant", "content": null, "thinking_blocks": "not a list"}]),
            json!([{"role": "assistant", "content": null, "provider_specific_fields": {"refusal": null}, "reasoning_items": []}]),
            json!([{"role": "assistant", "content": null, "tool_calls": [tool_call(json!({"provider_specific_fields": {}}))]}]),
            json!([{"role": "assistant", "content": null, "tool_calls": [tool_call(json!({"function_extra": null}))]}]),
            json!([{"role": "assistant", "content": null, "tool_calls": [tool_call(json!({}))]}, {"role": "tool", "tool_call_id": "c1", "content": "r"}]),
            json!([{"role": "system", "content": "s", "cache_control": {"type": "ephemeral"}}, {"role": "user", "content": "q"}]),
            json!([{"role": "user", "content": [{"type": "text", "text": "q"}], "cache_control": {"type": "ephemeral"}}]),
            json!([3, "odd", null]),
            json!("not a list"),
        ];
        let extras = [
            json!({}),
            json!({"max_completion_tokens": 9, "user": "u", "n": 2}),
            json!({"reasoning_effort": "medium", "max_tokens": 500}),
            json!({"reasoning_effort": "high", "stream_options": {"other": 1}, "metadata": {"a": [1, 2]}}),
            json!({"thinking": {"type": "enabled", "budget_tokens": 3000}, "max_tokens": 5000, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
            json!({"thinking": {"type": "enabled", "budget_tokens": 500}, "reasoning_effort": "low", "tools": [{"type": "function", "function": {"name": "f"}}]}),
            json!({"stream_options": null, "max_completion_tokens": null, "tool_choice": {"type": "function", "function": {"name": "f"}}}),
            json!({"stream_options": [1], "logit_bias": {"1": 2}, "stop": ["a", "b"]}),
        ];
        let endpoints = [
            "databricks-claude-sonnet-4-5",
            "databricks-gpt-5-1",
            "databricks-gpt-oss-120b",
            "databricks-meta-llama-3-3-70b-instruct",
        ];
        let mut checked = 0;
        for messages in &messages {
            for extra in &extras {
                // The model first, the messages between the other fields, and last.
                for position in 0..3 {
                    let mut body = Map::new();
                    body.insert("model".into(), json!("m"));
                    if position == 0 {
                        body.insert("messages".into(), messages.clone());
                    }
                    for (i, (k, v)) in extra.as_object().unwrap().iter().enumerate() {
                        body.insert(k.clone(), v.clone());
                        if position == 1 && i == 0 {
                            body.insert("messages".into(), messages.clone());
                        }
                    }
                    if !body.contains_key("messages") {
                        body.insert("messages".into(), messages.clone());
                    }
                    for kind in [Kind::Chat, Kind::Completion, Kind::Embedding] {
                        for endpoint in endpoints {
                            for stream in [false, true] {
                                for cap in [None, Some(900), Some(3000)] {
                                    let mut copy = body.clone();
                                    prepare_body(kind, &mut copy, endpoint, stream, cap);
                                    assert_eq!(
                                        String::from_utf8(prepared_payload(kind, &body, endpoint, stream, cap))
                                            .unwrap(),
                                        serde_json::to_string(&copy).unwrap(),
                                        "{kind:?} {endpoint} stream {stream} cap {cap:?}: {}",
                                        Value::Object(body.clone())
                                    );
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 12 * 8 * 3 * 3 * 4 * 2 * 3);
    }

    #[test]
    fn drop_params_removes_what_databricks_does_not_take() {
        let mut body =
            obj(json!({"model": "m", "messages": [], "user": "u", "seed": 1, "temperature": 0.2, "drop_params": true}));
        let mut dropped = drop_params(Kind::Chat, &mut body, false);
        dropped.sort();
        assert_eq!(dropped, ["seed", "user"]);
        assert_eq!(Value::Object(body), json!({"model": "m", "messages": [], "temperature": 0.2}));
        // Without it only LiteLLM's own switches go, and the ones asked for by name.
        let mut body = obj(
            json!({"model": "m", "user": "u", "temperature": 0.2, "additional_drop_params": ["temperature"], "drop_params": false}),
        );
        assert_eq!(drop_params(Kind::Chat, &mut body, false), ["temperature"]);
        assert_eq!(Value::Object(body), json!({"model": "m", "user": "u"}));
        let mut body = obj(json!({"model": "m", "input": "x", "dimensions": 3, "instruction": "i"}));
        assert_eq!(drop_params(Kind::Embedding, &mut body, true), ["dimensions"]);
    }

    #[test]
    fn embeddings_and_completions_are_normalised() {
        let raw = br#"{"object":"list","model":"served","data":[{"index":0,"object":"embedding","embedding":[1.0,-2.5]}],"usage":{"prompt_tokens":3,"total_tokens":3}}"#;
        let a = normalize_answer(Kind::Embedding, raw, "gte", false).unwrap();
        let v: Value = serde_json::from_slice(&a.bytes).unwrap();
        assert_eq!(v["model"], "gte");
        assert_eq!(v["data"][0]["embedding"], json!([1.0, -2.5]));
        assert_eq!(a.usage.map(|u| u.prompt_tokens), Some(3));
        let b = normalize_answer(Kind::Embedding, raw, "gte", true).unwrap();
        let v: Value = serde_json::from_slice(&b.bytes).unwrap();
        // 1.0f32 = 00 00 80 3f, -2.5f32 = 00 00 20 c0
        assert_eq!(v["data"][0]["embedding"], crate::base64::standard(&[0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]));
        let c = normalize_answer(
            Kind::Completion,
            br#"{"id":"cmpl_1","choices":[{"text":"hi"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
            "m",
            false,
        )
        .unwrap();
        assert_eq!(c.id.as_deref(), Some("cmpl_1"));
        assert_eq!(normalize_answer(Kind::Embedding, b"{}", "m", false).unwrap_err().status, 502);
    }

    #[test]
    fn workspace_root_strips_the_path() {
        assert_eq!(
            workspace_root("https://adb-1.2.azuredatabricks.net/serving-endpoints"),
            "https://adb-1.2.azuredatabricks.net"
        );
        assert_eq!(workspace_root("http://127.0.0.1:4010/serving-endpoints/"), "http://127.0.0.1:4010");
        assert_eq!(workspace_root("https://host"), "https://host");
    }

    #[test]
    fn url_joins_without_double_slash() {
        assert_eq!(
            url("https://w/serving-endpoints/", "chat/completions"),
            "https://w/serving-endpoints/chat/completions"
        );
    }
}
