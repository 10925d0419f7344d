//! Parsing and validation of a Responses request, and the body a native deployment gets.

use serde_json::{Map, Value};

use crate::openai::{self, ApiError};

/// A Responses request that passed validation. The body is kept whole: native deployments get
/// every field, known or not; the chat translation reads what it knows ([`Self::to_chat`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ResponsesRequest {
    pub model: String,
    pub stream: bool,
    pub body: Map<String, Value>,
}

/// Whether an endpoint takes the Responses API itself (Databricks' `/responses` route):
/// OpenAI's own models (GPT-5, the Codex models, which take nothing else). gpt-oss is an
/// open-weights model Databricks serves through chat completions like the other families.
pub fn serves_natively(endpoint: &str) -> bool {
    let name = endpoint.to_ascii_lowercase();
    name.contains("codex") || (name.contains("gpt") && !name.contains("gpt-oss"))
}

/// A fresh Response id, `resp_` and 32 hex digits.
pub fn new_response_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("no random bytes for an id: {e}")))?;
    Ok(format!("resp_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

const STATELESS: &str = "Databricks serves responses statelessly and the gateway stores none: send the whole \
                         conversation in `input` each turn (with `store: false`), as Codex does.";

/// Parses and validates a `/responses` body.
pub fn parse_request(bytes: &[u8]) -> Result<ResponsesRequest, ApiError> {
    let body = openai::parse_object(bytes)?;
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ApiError::invalid_request("`model` is a required field", "model"))
        }
        Some(_) => return Err(ApiError::invalid_request("`model` must be a string", "model")),
    };
    for field in ["previous_response_id", "conversation"] {
        if body.get(field).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid_request(format!("`{field}` is not supported: {STATELESS}"), field));
        }
    }
    if body.get("background") == Some(&Value::Bool(true)) {
        return Err(ApiError::invalid_request(
            format!("`background: true` is not supported: a background response must be stored. {STATELESS}"),
            "background",
        ));
    }
    if body.get("prompt").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid_request(
            "`prompt` (a prompt template stored on OpenAI's platform) is not supported on Databricks; send \
             `instructions` and `input` instead",
            "prompt",
        ));
    }
    check_input(body.get("input"))?;
    let stream = flag(&body, "stream")?;
    for field in ["store", "parallel_tool_calls"] {
        flag(&body, field)?;
    }
    optional(&body, "instructions", Value::is_string, "a string")?;
    optional(&body, "user", Value::is_string, "a string")?;
    optional(&body, "metadata", Value::is_object, "an object")?;
    optional(&body, "temperature", Value::is_number, "a number")?;
    optional(&body, "top_p", Value::is_number, "a number")?;
    optional(&body, "include", |v| v.as_array().is_some_and(|a| a.iter().all(Value::is_string)), "a list of strings")?;
    match body.get("max_output_tokens") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => {}
        Some(_) => {
            return Err(ApiError::invalid_request(
                "`max_output_tokens` must be a positive integer",
                "max_output_tokens",
            ))
        }
    }
    check_reasoning(body.get("reasoning"))?;
    check_text(body.get("text"))?;
    check_tools(body.get("tools"))?;
    check_tool_choice(body.get("tool_choice"))?;
    Ok(ResponsesRequest { model, stream, body })
}

fn flag(body: &Map<String, Value>, field: &str) -> Result<bool, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid_request(format!("`{field}` must be a boolean"), field)),
    }
}

fn optional(body: &Map<String, Value>, field: &str, ok: impl Fn(&Value) -> bool, what: &str) -> Result<(), ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if ok(v) => Ok(()),
        Some(_) => Err(ApiError::invalid_request(format!("`{field}` must be {what}"), field)),
    }
}

fn bad(param: &str, what: &str) -> ApiError {
    ApiError::invalid_request(format!("`{param}` {what}"), param)
}

/// A string field of an object, required.
fn string_at<'v>(item: &'v Value, field: &str, path: &str) -> Result<&'v str, ApiError> {
    item.get(field).and_then(Value::as_str).ok_or_else(|| bad(&format!("{path}.{field}"), "must be a string"))
}

fn check_input(input: Option<&Value>) -> Result<(), ApiError> {
    match input {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) if items.is_empty() => Err(bad("input", "must contain at least one item")),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                check_item(item, &format!("input[{i}]"))?;
            }
            Ok(())
        }
        None | Some(Value::Null) => Err(bad("input", "is a required field")),
        Some(_) => Err(bad("input", "must be a string or a list of input items")),
    }
}

/// The item type, with OpenAI's shorthand: an object with a `role` and no `type` is a message.
pub(super) fn item_type(item: &Value) -> Option<&str> {
    match item.get("type").and_then(Value::as_str) {
        Some(t) => Some(t),
        None if item.get("role").is_some() => Some("message"),
        None => None,
    }
}

fn check_item(item: &Value, path: &str) -> Result<(), ApiError> {
    if !item.is_object() {
        return Err(bad(path, "must be an object"));
    }
    match item_type(item) {
        Some("message") => check_message(item, path),
        Some("function_call") => {
            for field in ["call_id", "name", "arguments"] {
                string_at(item, field, path)?;
            }
            Ok(())
        }
        Some("custom_tool_call") => {
            for field in ["call_id", "name", "input"] {
                string_at(item, field, path)?;
            }
            Ok(())
        }
        Some("function_call_output" | "custom_tool_call_output") => {
            string_at(item, "call_id", path)?;
            match item.get("output") {
                Some(Value::String(_)) => Ok(()),
                Some(Value::Array(parts)) => check_parts(parts, &format!("{path}.output")),
                _ => Err(bad(&format!("{path}.output"), "must be a string or a list of content parts")),
            }
        }
        Some("reasoning") => match item.get("summary") {
            None | Some(Value::Array(_)) => Ok(()),
            Some(_) => Err(bad(&format!("{path}.summary"), "must be a list")),
        },
        Some("item_reference") => {
            Err(ApiError::invalid_request(format!("`{path}`: item references are not supported: {STATELESS}"), path))
        }
        // Other items (a hosted tool's call, a compaction) pass to native deployments as they
        // are; the chat translation says what it cannot carry.
        Some(_) => Ok(()),
        None => Err(bad(&format!("{path}.type"), "is required")),
    }
}

fn check_message(item: &Value, path: &str) -> Result<(), ApiError> {
    match item.get("role").and_then(Value::as_str) {
        Some("user" | "assistant" | "system" | "developer") => {}
        _ => return Err(bad(&format!("{path}.role"), "must be one of user, assistant, system, developer")),
    }
    match item.get("content") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => check_parts(parts, &format!("{path}.content")),
        _ => Err(bad(&format!("{path}.content"), "must be a string or a list of content parts")),
    }
}

fn check_parts(parts: &[Value], path: &str) -> Result<(), ApiError> {
    for (j, part) in parts.iter().enumerate() {
        let path = format!("{path}[{j}]");
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text" | "summary_text" | "reasoning_text") => {
                string_at(part, "text", &path)?;
            }
            Some("refusal") => {
                string_at(part, "refusal", &path)?;
            }
            Some("input_image") => {
                if !part.get("image_url").is_some_and(Value::is_string)
                    && !part.get("file_id").is_some_and(Value::is_string)
                {
                    return Err(bad(&format!("{path}.image_url"), "must be a string (or give `file_id`)"));
                }
            }
            Some(_) => {}
            None => return Err(bad(&format!("{path}.type"), "is required")),
        }
    }
    Ok(())
}

fn check_reasoning(reasoning: Option<&Value>) -> Result<(), ApiError> {
    match reasoning {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(r)) => {
            for field in ["effort", "summary", "generate_summary"] {
                if r.get(field).is_some_and(|v| !v.is_null() && !v.is_string()) {
                    return Err(bad(&format!("reasoning.{field}"), "must be a string"));
                }
            }
            Ok(())
        }
        Some(_) => Err(bad("reasoning", "must be an object")),
    }
}

fn check_text(text: Option<&Value>) -> Result<(), ApiError> {
    let format = match text {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(t)) => match t.get("format") {
            None | Some(Value::Null) => return Ok(()),
            Some(f) => f,
        },
        Some(_) => return Err(bad("text", "must be an object")),
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text" | "json_object") => Ok(()),
        Some("json_schema") => {
            string_at(format, "name", "text.format")?;
            if !format.get("schema").is_some_and(Value::is_object) {
                return Err(bad("text.format.schema", "must be an object (a JSON schema)"));
            }
            Ok(())
        }
        _ => Err(bad("text.format.type", "must be one of text, json_object, json_schema")),
    }
}

fn check_tools(tools: Option<&Value>) -> Result<(), ApiError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(bad("tools", "must be a list")),
    };
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("tools[{i}]");
        check_tool(tool, &path)?;
        if tool.get("type").and_then(Value::as_str) == Some("namespace") {
            let Some(inner) = tool.get("tools").and_then(Value::as_array) else {
                return Err(bad(&format!("{path}.tools"), "must be a list"));
            };
            for (j, tool) in inner.iter().enumerate() {
                check_tool(tool, &format!("{path}.tools[{j}]"))?;
            }
        }
    }
    Ok(())
}

fn check_tool(tool: &Value, path: &str) -> Result<(), ApiError> {
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {
            if string_at(tool, "name", path)?.is_empty() {
                return Err(bad(&format!("{path}.name"), "must not be empty"));
            }
            match tool.get("parameters") {
                None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
                Some(_) => Err(bad(&format!("{path}.parameters"), "must be an object (a JSON schema)")),
            }
        }
        Some("custom" | "namespace") => {
            if string_at(tool, "name", path)?.is_empty() {
                return Err(bad(&format!("{path}.name"), "must not be empty"));
            }
            Ok(())
        }
        Some(_) => Ok(()),
        None => Err(bad(&format!("{path}.type"), "is required")),
    }
}

fn check_tool_choice(choice: Option<&Value>) -> Result<(), ApiError> {
    match choice {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if matches!(s.as_str(), "none" | "auto" | "required") => Ok(()),
        Some(c @ Value::Object(_)) => match c.get("type").and_then(Value::as_str) {
            Some("function" | "custom") => string_at(c, "name", "tool_choice").map(|_| ()),
            Some(_) => Ok(()),
            None => Err(bad("tool_choice.type", "is required")),
        },
        Some(_) => Err(bad("tool_choice", "must be none, auto, required or a tool choice object")),
    }
}

impl ResponsesRequest {
    /// The client's `max_output_tokens`: what a budget must hold for the output on a native
    /// deployment (a translated one: `databricks::upstream_max_tokens` of the chat body).
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.body.get("max_output_tokens").and_then(Value::as_u64)
    }

    /// The body for `{api_base}/responses` on an OpenAI deployment: the endpoint as `model`,
    /// `store: false` (Databricks keeps nothing; with `include: ["reasoning.encrypted_content"]`
    /// reasoning comes back to be sent again), and `max_output_tokens` no higher than a cap a
    /// budget imposed. Everything else goes as the client sent it (hosted tools included).
    pub fn native_body(&self, endpoint: &str, output_cap: Option<u64>) -> Map<String, Value> {
        let mut body = self.body.clone();
        body.insert("model".into(), Value::String(endpoint.to_string()));
        body.insert("store".into(), Value::Bool(false));
        if let Some(cap) = output_cap {
            let max = self.max_output_tokens().map_or(cap, |asked| asked.min(cap));
            body.insert("max_output_tokens".into(), max.into());
        }
        // LiteLLM's request-level switches are the gateway's, never the upstream's.
        body.remove("drop_params");
        body.remove("additional_drop_params");
        // Reasoning a translated deployment gave (after a fallback across families) carries a
        // thinking signature OpenAI cannot verify: it would refuse the whole request.
        if let Some(Value::Array(items)) = body.get_mut("input") {
            items.retain(|item| !super::chat::is_gateway_reasoning(item));
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ResponsesRequest, ApiError> {
        parse_request(v.to_string().as_bytes())
    }

    #[test]
    fn a_codex_request_is_accepted_whole() {
        let body = json!({
            "model": "databricks-gpt-5-1", "instructions": "You are Codex.",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions/>"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
                {"type": "function_call", "name": "shell", "arguments": "{\"command\":[\"ls\"]}", "call_id": "call_1"},
                {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
                {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "x"}}],
            "tools": [{"type": "function", "name": "shell", "description": "run", "strict": false,
                       "parameters": {"type": "object", "properties": {}}},
                      {"type": "namespace", "name": "mcp__docs", "description": "docs",
                       "tools": [{"type": "function", "name": "search", "parameters": {"type": "object"}}]},
                      {"type": "web_search"}],
            "tool_choice": "auto", "parallel_tool_calls": false, "reasoning": {"effort": "medium", "summary": "auto"},
            "store": false, "stream": true, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "abc",
            "client_metadata": {"x": "y"}});
        let r = parse(body.clone()).unwrap();
        assert!(r.stream);
        assert_eq!(r.model, "databricks-gpt-5-1");
        assert_eq!(Value::Object(r.body), body);
        assert!(parse(json!({"model": "m", "input": "hi"})).is_ok());
        assert!(parse(json!({"model": "m", "input": [{"role": "user", "content": "hi"}]})).is_ok());
    }

    #[test]
    fn stateful_features_are_refused_with_a_clear_400() {
        for (body, param) in [
            (json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}), "previous_response_id"),
            (json!({"model": "m", "input": "hi", "conversation": "conv_1"}), "conversation"),
            (json!({"model": "m", "input": "hi", "background": true}), "background"),
            (json!({"model": "m", "input": "hi", "prompt": {"id": "pmpt_1"}}), "prompt"),
            (json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}), "input[0]"),
        ] {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{body}");
            assert_eq!(e.to_json()["error"]["type"], "invalid_request_error");
        }
        let e = parse(json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"})).unwrap_err();
        assert!(e.message.contains("stores none") && e.message.contains("whole conversation"), "{}", e.message);
        // null is the SDKs' way of not sending it.
        assert!(parse(json!({"model": "m", "input": "hi", "previous_response_id": null, "background": false})).is_ok());
    }

    #[test]
    fn malformed_requests_name_the_param() {
        let cases = [
            (json!({"input": "hi"}), "model"),
            (json!({"model": 1, "input": "hi"}), "model"),
            (json!({"model": "m"}), "input"),
            (json!({"model": "m", "input": []}), "input"),
            (json!({"model": "m", "input": 3}), "input"),
            (json!({"model": "m", "input": [3]}), "input[0]"),
            (json!({"model": "m", "input": [{"content": "x"}]}), "input[0].type"),
            (json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}), "input[0].role"),
            (json!({"model": "m", "input": [{"role": "user"}]}), "input[0].content"),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"text": "x"}]}]}),
                "input[0].content[0].type",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text"}]}]}),
                "input[0].content[0].text",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
                "input[0].content[0].image_url",
            ),
            (
                json!({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}),
                "input[0].call_id",
            ),
            (
                json!({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]}),
                "input[0].arguments",
            ),
            (json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]}), "input[0].output"),
            (json!({"model": "m", "input": "x", "stream": "yes"}), "stream"),
            (json!({"model": "m", "input": "x", "store": 1}), "store"),
            (json!({"model": "m", "input": "x", "instructions": ["a"]}), "instructions"),
            (json!({"model": "m", "input": "x", "max_output_tokens": 0}), "max_output_tokens"),
            (json!({"model": "m", "input": "x", "max_output_tokens": 1.5}), "max_output_tokens"),
            (json!({"model": "m", "input": "x", "temperature": "hot"}), "temperature"),
            (json!({"model": "m", "input": "x", "reasoning": {"effort": 3}}), "reasoning.effort"),
            (json!({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}), "text.format.type"),
            (
                json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}),
                "text.format.schema",
            ),
            (json!({"model": "m", "input": "x", "tools": {}}), "tools"),
            (json!({"model": "m", "input": "x", "tools": [{"name": "f"}]}), "tools[0].type"),
            (json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}), "tools[0].name"),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": "{}"}]}),
                "tools[0].parameters",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "namespace", "name": "n", "tools": [{"type": "function"}]}]}),
                "tools[0].tools[0].name",
            ),
            (json!({"model": "m", "input": "x", "tool_choice": "always"}), "tool_choice"),
            (json!({"model": "m", "input": "x", "tool_choice": {"type": "function"}}), "tool_choice.name"),
            (json!({"model": "m", "input": "x", "include": "all"}), "include"),
        ];
        for (body, param) in cases {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{body}: {}", e.message);
        }
        assert_eq!(parse_request(b"{oops").unwrap_err().param.as_deref(), Some("request_body"));
    }

    #[test]
    fn the_native_body_names_the_endpoint_stores_nothing_and_keeps_under_a_cap() {
        let r = parse(json!({"model": "gpt", "input": "hi", "store": true, "max_output_tokens": 500,
                             "tools": [{"type": "web_search"}], "drop_params": true}))
        .unwrap();
        let body = r.native_body("databricks-gpt-5-1", None);
        assert_eq!(
            Value::Object(body),
            json!({"model": "databricks-gpt-5-1", "input": "hi", "store": false, "max_output_tokens": 500,
                   "tools": [{"type": "web_search"}]})
        );
        assert_eq!(r.native_body("e", Some(100))["max_output_tokens"], 100);
        assert_eq!(r.native_body("e", Some(900))["max_output_tokens"], 500, "a cap never raises");
        let open = parse(json!({"model": "gpt", "input": "hi"})).unwrap();
        // Claude's reasoning from a translated turn is left out; OpenAI's own stays.
        let mixed = parse(json!({"model": "gpt", "input": [
            {"role": "user", "content": "q"},
            {"type": "reasoning", "summary": [], "encrypted_content": "gateway-thinking-signature:s"},
            {"type": "reasoning", "summary": [], "encrypted_content": "gateway-redacted-thinking:d"},
            {"type": "reasoning", "summary": [], "encrypted_content": "gAAAA"},
            {"role": "assistant", "content": "a"}]}))
        .unwrap();
        let input = mixed.native_body("e", None)["input"].clone();
        assert_eq!(input.as_array().unwrap().len(), 3);
        assert_eq!(input[1]["encrypted_content"], "gAAAA");
        assert_eq!(open.native_body("e", Some(64))["max_output_tokens"], 64);
        assert_eq!(open.max_output_tokens(), None);
        assert_eq!(r.max_output_tokens(), Some(500));
    }

    #[test]
    fn openai_endpoints_are_native_and_the_rest_translated() {
        for e in
            ["databricks-gpt-5-1", "databricks-gpt-5", "databricks-gpt-5-1-codex-max", "my-codex", "GPT-4o-external"]
        {
            assert!(serves_natively(e), "{e}");
        }
        for e in ["databricks-gpt-oss-120b", "databricks-claude-sonnet-4-5", "databricks-meta-llama-3-3-70b-instruct"] {
            assert!(!serves_natively(e), "{e}");
        }
    }

    #[test]
    fn response_ids_are_fresh() {
        let (a, b) = (new_response_id().unwrap(), new_response_id().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("resp_") && a.len() == 37, "{a}");
    }
}
