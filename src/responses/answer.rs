//! Response objects: the shell every Response of one request shares, a chat answer as a
//! Response, and a native Response as the client sees it.

use serde_json::{json, Map, Value};

use super::chat::{ToolNames, REDACTED_PREFIX, SIGNATURE_PREFIX};
use super::request::ResponsesRequest;
use super::usage::Usage;
use crate::databricks;
use crate::openai::ApiError;

/// What every Response (and stream event) of one request repeats: its id, creation time, the
/// model as the client named it, the request's parameters, and how tool names map back.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponseShell {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    /// The request parameters a Response echoes.
    echo: Map<String, Value>,
    pub(super) tools: ToolNames,
}

/// A Response ready for the client, and its usage for settlement.
#[derive(Debug)]
pub struct ResponseAnswer {
    pub bytes: Vec<u8>,
    pub usage: Option<Usage>,
    /// The Response's id (`resp_...`).
    pub id: Option<String>,
}

impl ResponsesRequest {
    /// The shell of this request's Response: `id` from [`super::new_response_id`], `created_at`
    /// in seconds.
    pub fn shell(&self, id: String, created_at: u64) -> ResponseShell {
        let b = &self.body;
        let get = |k: &str, default: Value| b.get(k).filter(|v| !v.is_null()).cloned().unwrap_or(default);
        let reasoning = b.get("reasoning");
        let mut echo = Map::new();
        echo.insert("instructions".into(), get("instructions", Value::Null));
        echo.insert("max_output_tokens".into(), get("max_output_tokens", Value::Null));
        echo.insert("parallel_tool_calls".into(), get("parallel_tool_calls", Value::Bool(true)));
        echo.insert("previous_response_id".into(), Value::Null);
        echo.insert(
            "reasoning".into(),
            json!({
                "effort": reasoning.and_then(|r| r.get("effort")).cloned().unwrap_or(Value::Null),
                "summary": reasoning.and_then(|r| r.get("summary")).cloned().unwrap_or(Value::Null),
            }),
        );
        // Nothing is stored, whatever the client asked.
        echo.insert("store".into(), Value::Bool(false));
        echo.insert("temperature".into(), get("temperature", json!(1.0)));
        echo.insert("text".into(), get("text", json!({"format": {"type": "text"}})));
        echo.insert("tool_choice".into(), get("tool_choice", json!("auto")));
        echo.insert("tools".into(), get("tools", json!([])));
        echo.insert("top_p".into(), get("top_p", json!(1.0)));
        echo.insert("truncation".into(), get("truncation", json!("disabled")));
        echo.insert("user".into(), get("user", Value::Null));
        echo.insert("metadata".into(), get("metadata", json!({})));
        ResponseShell { id, created_at, model: self.model.clone(), echo, tools: ToolNames::of(&self.body) }
    }
}

impl ResponseShell {
    /// The Response object: `status` (in_progress, completed, incomplete, failed), `output`,
    /// `usage`, why it is incomplete, and the error of a failed one.
    pub(super) fn response(
        &self,
        status: &str,
        output: Vec<Value>,
        usage: Option<&Usage>,
        incomplete: Option<&str>,
        error: Option<Value>,
    ) -> Value {
        let mut r = Map::new();
        r.insert("id".into(), Value::String(self.id.clone()));
        r.insert("object".into(), "response".into());
        r.insert("created_at".into(), self.created_at.into());
        r.insert("status".into(), status.into());
        r.insert("background".into(), Value::Bool(false));
        r.insert("error".into(), error.unwrap_or(Value::Null));
        r.insert("incomplete_details".into(), incomplete.map_or(Value::Null, |reason| json!({"reason": reason})));
        r.insert("model".into(), Value::String(self.model.clone()));
        r.insert("output".into(), Value::Array(output));
        r.extend(self.echo.iter().map(|(k, v)| (k.clone(), v.clone())));
        r.insert("usage".into(), usage.map_or(Value::Null, Usage::to_json));
        Value::Object(r)
    }

    /// The id of the output item at `index` of this Response (`msg_...`, `fc_...`, `rs_...`):
    /// derived from the Response's, so unique and stable.
    pub(super) fn item_id(&self, prefix: &str, index: usize) -> String {
        let suffix = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        format!("{prefix}_{suffix}{index:02}")
    }

    /// A call id for a tool call the upstream sent without one.
    pub(super) fn call_id(&self, index: usize) -> String {
        self.item_id("call", index)
    }
}

/// A reasoning item: its summary text, and the thinking signature (or redacted thinking) to
/// send back, in `encrypted_content`.
pub(super) fn reasoning_item(id: &str, text: &str, encrypted: Option<&str>) -> Value {
    let summary = if text.is_empty() { json!([]) } else { json!([{"type": "summary_text", "text": text}]) };
    let mut item = json!({"id": id, "type": "reasoning", "summary": summary});
    if let Some(encrypted) = encrypted {
        item["encrypted_content"] = Value::String(encrypted.to_string());
    }
    item
}

pub(super) fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text})
}

pub(super) fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"id": id, "type": "message", "status": status, "content": content, "role": "assistant"})
}

/// The status a chat `finish_reason` gives a Response, and why it is incomplete.
pub(super) fn status_of(finish_reason: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// The `encrypted_content` of a thinking block (see `chat::SIGNATURE_PREFIX`).
pub(super) fn encrypted_signature(signature: &str) -> String {
    format!("{SIGNATURE_PREFIX}{signature}")
}

pub(super) fn encrypted_redacted(data: &str) -> String {
    format!("{REDACTED_PREFIX}{data}")
}

/// A Databricks chat answer (as it came) as the Response of `shell`'s request.
pub fn response_from_chat(raw: &[u8], shell: &ResponseShell) -> Result<ResponseAnswer, ApiError> {
    let answer = databricks::normalize_chat_completion(raw, &shell.model)?;
    let v: Value = serde_json::from_slice(&answer.bytes)
        .map_err(|e| ApiError::internal(format!("cannot read the normalised answer: {e}")))?;
    let choice = v.get("choices").and_then(|c| c.get(0)).unwrap_or(&Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let (status, incomplete) = status_of(choice.get("finish_reason").and_then(Value::as_str));
    let mut output = Vec::new();
    match message.get("thinking_blocks").and_then(Value::as_array) {
        Some(blocks) => {
            // A thinking block may come in pieces; its signature, on the last, ends it (as in a
            // stream).
            let mut thinking = String::new();
            for block in blocks {
                let id = shell.item_id("rs", output.len());
                let s = |k: &str| block.get(k).and_then(Value::as_str);
                match s("type") {
                    Some("thinking") => {
                        thinking.push_str(s("thinking").unwrap_or(""));
                        if let Some(signature) = s("signature") {
                            let encrypted = encrypted_signature(signature);
                            output.push(reasoning_item(&id, &std::mem::take(&mut thinking), Some(&encrypted)));
                        }
                    }
                    Some("redacted_thinking") => {
                        if !thinking.is_empty() {
                            output.push(reasoning_item(&id, &std::mem::take(&mut thinking), None));
                        }
                        let id = shell.item_id("rs", output.len());
                        output.push(reasoning_item(&id, "", s("data").map(encrypted_redacted).as_deref()))
                    }
                    _ => {}
                }
            }
            if !thinking.is_empty() {
                output.push(reasoning_item(&shell.item_id("rs", output.len()), &thinking, None));
            }
        }
        None => {
            if let Some(text) = message.get("reasoning_content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                output.push(reasoning_item(&shell.item_id("rs", 0), text, None));
            }
        }
    }
    if let Some(text) = message.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        let item_status = if status == "incomplete" { "incomplete" } else { "completed" };
        output.push(message_item(&shell.item_id("msg", output.len()), item_status, vec![output_text(text)]));
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let index = output.len();
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let function = call.get("function").unwrap_or(&Value::Null);
        let call_id = s(call, "id").unwrap_or_else(|| shell.call_id(index));
        let name = s(function, "name").unwrap_or_default();
        let arguments = s(function, "arguments").unwrap_or_default();
        let prefix = if shell.tools.is_custom(&name) { "ctc" } else { "fc" };
        output.push(shell.tools.call_item(&shell.item_id(prefix, index), &call_id, &name, &arguments, "completed"));
    }
    let usage = Usage::from_chat(v.get("usage"));
    let response = shell.response(status, output, usage.as_ref(), incomplete, None);
    let bytes = crate::json::to_vec(&response);
    Ok(ResponseAnswer { bytes, usage, id: Some(shell.id.clone()) })
}

/// A native Databricks Response as the client sees it: `model` the name the client asked for.
pub fn native_answer(raw: &[u8], model: &str) -> Result<ResponseAnswer, ApiError> {
    let mut answer = match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(answer)) => answer,
        _ => return Err(ApiError::bad_gateway("Databricks returned a malformed Response (not a JSON object)")),
    };
    if !answer.get("output").is_some_and(Value::is_array) {
        return Err(ApiError::bad_gateway("Databricks returned a malformed Response (no output)"));
    }
    answer.insert("model".into(), Value::String(model.to_string()));
    let usage = Usage::from_responses(answer.get("usage"));
    let id = answer.get("id").and_then(Value::as_str).map(str::to_string);
    let bytes = crate::json::map_to_vec(&answer);
    Ok(ResponseAnswer { bytes, usage, id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responses::parse_request;

    fn shell_for(body: Value) -> ResponseShell {
        parse_request(body.to_string().as_bytes()).unwrap().shell("resp_abc".into(), 1_700_000_000)
    }

    fn plain_shell() -> ResponseShell {
        shell_for(json!({"model": "claude", "input": "hi", "max_output_tokens": 64, "store": true,
                         "tools": [{"type": "function", "name": "get_weather"}]}))
    }

    fn response_of(raw: Value, shell: &ResponseShell) -> (Value, ResponseAnswer) {
        let answer = response_from_chat(raw.to_string().as_bytes(), shell).unwrap();
        (serde_json::from_slice(&answer.bytes).unwrap(), answer)
    }

    #[test]
    fn a_text_answer_is_a_completed_response_with_usage() {
        let raw = json!({"id": "chatcmpl_1", "object": "chat.completion", "created": 1, "model": "served",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!", "tool_calls": null},
                         "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23, "cache_read_input_tokens": 16}});
        let (v, answer) = response_of(raw, &plain_shell());
        assert_eq!(
            v,
            json!({"id": "resp_abc", "object": "response", "created_at": 1_700_000_000u64, "status": "completed",
                "background": false, "error": null, "incomplete_details": null, "model": "claude",
                "output": [{"id": "msg_abc00", "type": "message", "status": "completed", "role": "assistant",
                            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": "Hello!"}]}],
                "instructions": null, "max_output_tokens": 64, "parallel_tool_calls": true, "previous_response_id": null,
                "reasoning": {"effort": null, "summary": null}, "store": false, "temperature": 1.0,
                "text": {"format": {"type": "text"}}, "tool_choice": "auto",
                "tools": [{"type": "function", "name": "get_weather"}], "top_p": 1.0, "truncation": "disabled",
                "user": null, "metadata": {},
                "usage": {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 16}, "output_tokens": 3,
                          "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 23}})
        );
        assert_eq!(answer.id.as_deref(), Some("resp_abc"));
        assert_eq!(answer.usage.map(|u| (u.input_tokens, u.cached_input_tokens)), Some((20, 16)));
    }

    #[test]
    fn reasoning_and_tool_calls_become_items_in_order() {
        let raw = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Weather needs ", "signature": ""},
                                                  {"type": "summary_text", "text": "a tool.", "signature": "sig-9"}]},
                {"type": "reasoning", "summary": [{"type": "summary_encrypted_text", "data": "Enc=="}]},
                {"type": "text", "text": "Checking."}],
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 30, "completion_tokens_details": {"reasoning_tokens": 12}}});
        let (v, answer) = response_of(raw, &plain_shell());
        assert_eq!(
            v["output"],
            json!([
                {"id": "rs_abc00", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Weather needs a tool."}],
                 "encrypted_content": "gateway-thinking-signature:sig-9"},
                {"id": "rs_abc01", "type": "reasoning", "summary": [], "encrypted_content": "gateway-redacted-thinking:Enc=="},
                {"id": "msg_abc02", "type": "message", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": "Checking."}]},
                {"id": "fc_abc03", "type": "function_call", "status": "completed", "arguments": "{\"city\":\"Paris\"}",
                 "call_id": "call_1", "name": "get_weather"},
                {"id": "fc_abc04", "type": "function_call", "status": "completed", "arguments": "{\"city\":\"Rome\"}",
                 "call_id": "call_abc04", "name": "get_weather"}])
        );
        assert_eq!(v["status"], "completed");
        assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 12);
        assert_eq!(answer.usage.unwrap().total_tokens(), 80);
    }

    #[test]
    fn the_round_trip_keeps_claudes_signatures() {
        // An answer's items, sent back as the next request's input, give the thinking back.
        let raw = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "Think.", "signature": "s1"}]}],
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}}]});
        let (v, _) = response_of(raw, &plain_shell());
        let mut input = vec![json!({"role": "user", "content": "weather?"})];
        input.extend(v["output"].as_array().unwrap().iter().cloned());
        input.push(json!({"type": "function_call_output", "call_id": "call_1", "output": "sunny"}));
        let next = json!({"model": "claude", "input": input, "tools": [{"type": "function", "name": "get_weather"}]});
        let chat = parse_request(next.to_string().as_bytes()).unwrap().to_chat(None).unwrap();
        assert_eq!(
            chat.body["messages"][1],
            json!({"role": "assistant", "content": null,
                   "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
                   "thinking_blocks": [{"type": "thinking", "thinking": "Think.", "signature": "s1"}]})
        );
        assert!(chat.warnings.is_empty(), "{:?}", chat.warnings);
    }

    #[test]
    fn an_answer_cut_by_max_tokens_is_incomplete() {
        let raw = json!({"choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": "Once upon"}}], "usage": {"prompt_tokens": 5, "completion_tokens": 2}});
        let (v, _) = response_of(raw, &plain_shell());
        assert_eq!(
            (v["status"].as_str(), v["incomplete_details"]["reason"].as_str()),
            (Some("incomplete"), Some("max_output_tokens"))
        );
        assert_eq!(v["output"][0]["status"], "incomplete");
        let raw = json!({"choices": [{"index": 0, "finish_reason": "content_filter", "message": {"role": "assistant", "content": null}}]});
        let (v, answer) = response_of(raw, &plain_shell());
        assert_eq!(v["incomplete_details"]["reason"], "content_filter");
        assert_eq!(v["output"], json!([]));
        assert!(answer.usage.is_none());
        assert_eq!(v["usage"], Value::Null);
    }

    #[test]
    fn the_shell_echoes_the_request() {
        let shell = shell_for(json!({"model": "m", "input": "x", "instructions": "Be brief.", "temperature": 0.3,
            "reasoning": {"effort": "high"}, "tool_choice": "required", "text": {"format": {"type": "json_object"}},
            "metadata": {"k": "v"}, "user": "u-1", "parallel_tool_calls": false}));
        let v = shell.response("in_progress", vec![], None, None, None);
        assert_eq!(v["instructions"], "Be brief.");
        assert_eq!(v["temperature"], 0.3);
        assert_eq!(v["reasoning"], json!({"effort": "high", "summary": null}));
        assert_eq!(v["tool_choice"], "required");
        assert_eq!(v["text"]["format"]["type"], "json_object");
        assert_eq!((v["metadata"]["k"].as_str(), v["user"].as_str()), (Some("v"), Some("u-1")));
        assert_eq!(v["parallel_tool_calls"], false);
        assert_eq!(v["status"], "in_progress");
    }

    #[test]
    fn malformed_chat_answers_are_bad_gateway() {
        for raw in [&b"{\"choices\": ["[..], b"[]"] {
            assert_eq!(response_from_chat(raw, &plain_shell()).unwrap_err().status, 502);
        }
    }

    #[test]
    fn a_native_answer_gets_the_clients_model_and_its_usage_read() {
        let raw = json!({"id": "resp_up", "object": "response", "status": "completed", "model": "gpt-5-served",
            "output": [{"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": "Hi", "annotations": []}]}],
            "usage": {"input_tokens": 2000, "input_tokens_details": {"cached_tokens": 1920}, "output_tokens": 9,
                      "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 2009}});
        let answer = native_answer(raw.to_string().as_bytes(), "databricks-gpt-5-1").unwrap();
        let v: Value = serde_json::from_slice(&answer.bytes).unwrap();
        assert_eq!(v["model"], "databricks-gpt-5-1");
        assert_eq!(v["output"], raw["output"]);
        assert_eq!(answer.id.as_deref(), Some("resp_up"));
        let u = answer.usage.unwrap();
        assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens), (2000, 1920, 9, 4));
        for raw in [&b"nope"[..], b"{\"id\":\"r\"}", b"{\"output\":{}}"] {
            assert_eq!(native_answer(raw, "m").unwrap_err().status, 502);
        }
    }
}
