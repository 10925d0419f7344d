//! The Responses API as a [`WireFormat`]: the pipeline (`runtime::proxy`) serves it like any
//! other API, so keys, limits, budgets, routing, retries, fallbacks, settlement and the log line
//! apply unchanged. Each attempt chooses its way by the deployment's endpoint: native on OpenAI
//! deployments (`{api_base}/responses`), translated to chat completions on every other one.
//! One Response shell (its id and creation time) serves every attempt of a request, so a
//! fallback from a GPT group to a Claude group answers with the same Response id.

use std::cell::RefCell;

use serde_json::{Map, Value};

use super::{
    native_answer, parse_request, response_from_chat, serves_natively, NativeRelay, ResponseShell, ResponsesRequest,
    TranslatedRelay, NATIVE_ROUTE,
};
use crate::databricks::{self, Answer};
use crate::openai::{ApiError, Kind, ProxyRequest};
use crate::prompt::PromptTally;
use crate::secret::Secret;
use crate::wire::{StreamRelay, UpstreamRequest, WireFormat};

/// One `/v1/responses` request.
#[derive(Debug)]
pub struct Responses {
    /// Seconds since the epoch: the Response's `created_at`.
    created_at: u64,
    /// The client's model name and whether it streams, once parsed.
    model: String,
    stream: bool,
    shell: Option<ResponseShell>,
    /// What the last translated attempt left out (hosted tools, ...), for the log line.
    left_out: RefCell<Vec<String>>,
}

impl Responses {
    pub fn new(created_at: u64) -> Self {
        Responses { created_at, model: String::new(), stream: false, shell: None, left_out: RefCell::default() }
    }

    /// The request as the pipeline holds it now (parameters dropped, a budget's cap imposed).
    fn request(&self, body: &Map<String, Value>) -> ResponsesRequest {
        ResponsesRequest { model: self.model.clone(), stream: self.stream, body: body.clone() }
    }

    /// The request's shell, naming the model as the attempt shows it (a fallback's group).
    fn shell(&self, shown: &str) -> ResponseShell {
        let mut shell = self.shell.clone().unwrap_or_else(|| {
            ResponsesRequest { model: shown.to_string(), stream: self.stream, body: Map::new() }
                .shell(String::new(), self.created_at)
        });
        shell.model = shown.to_string();
        shell
    }
}

impl WireFormat for Responses {
    fn parse(&mut self, bytes: &[u8]) -> Result<ProxyRequest, ApiError> {
        let request = parse_request(bytes)?;
        self.shell = Some(request.shell(super::new_response_id()?, self.created_at));
        self.model = request.model.clone();
        self.stream = request.stream;
        let ResponsesRequest { model, stream, body } = request;
        Ok(ProxyRequest { kind: Kind::Chat, model, stream, body, base64: false, include_usage: true })
    }

    /// LiteLLM's `drop_params` asks to drop what the provider does not take: native deployments
    /// take the whole Responses API, and the chat translation leaves out what chat cannot carry
    /// (named in the log line), so only `additional_drop_params` removes anything here.
    fn drop_params(&self, body: &mut Map<String, Value>, _configured: bool) -> Vec<String> {
        body.remove("drop_params");
        let mut dropped = Vec::new();
        if let Some(Value::Array(extra)) = body.remove("additional_drop_params") {
            for name in extra.iter().filter_map(Value::as_str) {
                if !matches!(name, "model" | "input") && body.remove(name).is_some() {
                    dropped.push(name.to_string());
                }
            }
        }
        dropped
    }

    fn tally(&self, body: &Map<String, Value>) -> PromptTally {
        PromptTally::of(Kind::Chat, &self.request(body).chat_equivalent())
    }

    fn max_output_tokens(&self, body: &Map<String, Value>, endpoint: &str) -> Option<u64> {
        let asked = body.get("max_output_tokens").and_then(Value::as_u64);
        if serves_natively(endpoint) {
            // Reasoning tokens count inside `max_output_tokens` on OpenAI's models.
            return asked;
        }
        // What the chat translation carries that decides its `max_tokens` (see `to_chat`).
        let mut chat = Map::new();
        if let Some(max) = asked {
            chat.insert("max_tokens".into(), max.into());
        }
        let effort = body.get("reasoning").and_then(|r| r.get("effort")).and_then(Value::as_str);
        if let Some(effort) = effort.filter(|e| *e != "none") {
            chat.insert("reasoning_effort".into(), effort.into());
        }
        databricks::upstream_max_tokens(Kind::Chat, &chat, endpoint)
    }

    fn choices(&self, _body: &Map<String, Value>) -> u64 {
        1
    }

    fn impose_output_cap(&self, body: &mut Map<String, Value>, cap: u64) {
        let asked = body.get("max_output_tokens").and_then(Value::as_u64);
        body.insert("max_output_tokens".into(), asked.map_or(cap, |a| a.min(cap)).into());
    }

    fn upstream_request(
        &self,
        body: &Map<String, Value>,
        endpoint: &str,
        stream: bool,
        output_cap: Option<u64>,
    ) -> Result<UpstreamRequest, ApiError> {
        let request = self.request(body);
        if serves_natively(endpoint) {
            self.left_out.borrow_mut().clear();
            let body = crate::json::map_to_vec(&request.native_body(endpoint, output_cap));
            return Ok(UpstreamRequest { route: NATIVE_ROUTE, body, headers: Vec::new() });
        }
        let translation = request.to_chat(output_cap)?;
        let mut chat = translation.body;
        databricks::prepare_body(Kind::Chat, &mut chat, endpoint, stream, output_cap);
        *self.left_out.borrow_mut() = translation.warnings;
        Ok(UpstreamRequest { route: Kind::Chat.route(), body: crate::json::map_to_vec(&chat), headers: Vec::new() })
    }

    fn answer(&self, endpoint: &str, bytes: &[u8], shown: &str) -> Result<Answer, ApiError> {
        let answer = if serves_natively(endpoint) {
            native_answer(bytes, shown)?
        } else {
            response_from_chat(bytes, &self.shell(shown))?
        };
        Ok(Answer { bytes: answer.bytes, usage: answer.usage.map(|u| u.to_chat_usage()), id: answer.id })
    }

    fn relay(&self, endpoint: &str, shown: &str, secrets: Vec<Secret>) -> Box<dyn StreamRelay> {
        if serves_natively(endpoint) {
            Box::new(NativeRelay::new(shown, secrets))
        } else {
            Box::new(TranslatedRelay::new(self.shell(shown), secrets))
        }
    }

    fn left_out(&self) -> Vec<String> {
        self.left_out.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GPT: &str = "databricks-gpt-5-1";
    const CLAUDE: &str = "databricks-claude-sonnet-4-5";
    const LLAMA: &str = "databricks-meta-llama-3-3-70b-instruct";

    fn parsed(body: Value) -> (Responses, Map<String, Value>) {
        let mut wire = Responses::new(1_700_000_000);
        let request = wire.parse(body.to_string().as_bytes()).unwrap();
        (wire, request.body)
    }

    fn sent(wire: &Responses, body: &Map<String, Value>, endpoint: &str, cap: Option<u64>) -> (&'static str, Value) {
        let upstream = wire.upstream_request(body, endpoint, wire.stream, cap).unwrap();
        (upstream.route, serde_json::from_slice(&upstream.body).unwrap())
    }

    #[test]
    fn gpt_goes_native_and_the_others_are_translated_to_chat() {
        let tools =
            json!([{"type": "function", "name": "shell", "parameters": {"type": "object"}}, {"type": "web_search"}]);
        let (wire, body) = parsed(json!({"model": "gpt", "input": "hi", "stream": true, "tools": tools}));
        let (route, native) = sent(&wire, &body, GPT, None);
        assert_eq!((route, native["model"].as_str(), native["store"].as_bool()), ("responses", Some(GPT), Some(false)));
        assert_eq!(native["tools"], tools, "hosted tools pass to OpenAI");
        assert!(wire.left_out().is_empty());
        for endpoint in [CLAUDE, LLAMA, "databricks-gpt-oss-120b"] {
            let (route, chat) = sent(&wire, &body, endpoint, None);
            assert_eq!((route, chat["model"].as_str()), ("chat/completions", Some(endpoint)));
            assert_eq!(chat["messages"], json!([{"role": "user", "content": "hi"}]));
            assert_eq!(chat["stream_options"]["include_usage"], true, "{chat}");
            assert_eq!(chat["tools"].as_array().map(Vec::len), Some(1));
            assert!(wire.left_out().iter().any(|w| w.contains("web_search")), "{:?}", wire.left_out());
        }
        // The native attempt after a translated one: nothing left out.
        sent(&wire, &body, "databricks-gpt-5-codex", None);
        assert!(wire.left_out().is_empty());
    }

    #[test]
    fn budgets_count_max_output_tokens_and_the_cap_holds_on_both_ways() {
        let (wire, mut body) =
            parsed(json!({"model": "m", "input": "hi", "max_output_tokens": 500, "reasoning": {"effort": "medium"}}));
        assert_eq!(wire.max_output_tokens(&body, GPT), Some(500));
        // Claude thinks within the answer's room: the chat translation's own rule.
        let translated = ResponsesRequest { model: "m".into(), stream: false, body: body.clone() };
        let chat = translated.to_chat(None).unwrap().body;
        assert_eq!(wire.max_output_tokens(&body, CLAUDE), databricks::upstream_max_tokens(Kind::Chat, &chat, CLAUDE));
        assert_eq!(wire.max_output_tokens(&body, CLAUDE), Some(2048 + 500));
        assert_eq!(wire.max_output_tokens(&body, LLAMA), Some(500));
        let (unbounded, unbounded_body) = parsed(json!({"model": "m", "input": "hi", "reasoning": {"effort": "none"}}));
        assert_eq!(unbounded.max_output_tokens(&unbounded_body, CLAUDE), None);
        assert_eq!(wire.choices(&body), 1);

        wire.impose_output_cap(&mut body, 100);
        assert_eq!(body["max_output_tokens"], 100);
        assert_eq!(sent(&wire, &body, GPT, Some(100)).1["max_output_tokens"], 100);
        let (_, claude) = sent(&wire, &body, CLAUDE, Some(100));
        assert!(claude["max_tokens"].as_u64().is_some_and(|m| m <= 100), "{claude}");
        let (_, llama) = sent(&wire, &body, LLAMA, Some(100));
        assert_eq!(llama["max_tokens"], 100);
    }

    #[test]
    fn every_attempt_answers_with_the_one_response_id_and_the_shown_model() {
        let (wire, _) = parsed(json!({"model": "gpt-then-claude", "input": "hi"}));
        let chat = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": CLAUDE,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Echo: hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                      "cache_read_input_tokens": 8, "cache_creation_input_tokens": 2}});
        let first = wire.answer(CLAUDE, chat.to_string().as_bytes(), "claude-then-gpt").unwrap();
        let again = wire.answer(LLAMA, chat.to_string().as_bytes(), "x").unwrap();
        let v: Value = serde_json::from_slice(&first.bytes).unwrap();
        assert_eq!(v["object"], "response");
        assert_eq!(v["model"], "claude-then-gpt");
        assert_eq!(v["output"][0]["content"][0]["text"], "Echo: hi");
        assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 8);
        assert_eq!(first.id, again.id);
        assert!(first.id.as_deref().is_some_and(|id| id.starts_with("resp_")));
        let usage = first.usage.unwrap();
        assert_eq!(
            (usage.prompt_tokens, usage.cache_read_tokens, usage.cache_creation_tokens, usage.completion_tokens),
            (12, 8, 2, 3)
        );

        let native = json!({"id": "resp_native", "object": "response", "model": GPT, "status": "completed",
            "output": [], "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 64},
                                    "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 4}}});
        let answer = wire.answer(GPT, native.to_string().as_bytes(), "gpt-then-claude").unwrap();
        let v: Value = serde_json::from_slice(&answer.bytes).unwrap();
        assert_eq!((v["model"].as_str(), answer.id.as_deref()), (Some("gpt-then-claude"), Some("resp_native")));
        let usage = answer.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.cache_read_tokens, usage.total_tokens), (100, 64, 109));
    }

    #[test]
    fn the_relays_report_usage_as_settlement_reads_it() {
        let (wire, _) = parsed(json!({"model": "m", "input": "hi", "stream": true}));
        let mut translated = wire.relay(CLAUDE, "m", Vec::new());
        let chunk = json!({"id": "c", "object": "chat.completion.chunk", "model": CLAUDE,
            "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11, "cache_read_input_tokens": 4}});
        let out = translated.feed(format!("data: {chunk}\n\ndata: [DONE]\n\n").as_bytes());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: response.created"), "{text}");
        assert!(text.contains("event: response.completed"), "{text}");
        assert!(translated.is_closed());
        let usage = translated.usage().unwrap();
        assert_eq!((usage.prompt_tokens, usage.cache_read_tokens), (10, 4));
        assert!(translated.id().is_some_and(|id| id.starts_with("resp_")));

        let mut native = wire.relay(GPT, "m", Vec::new());
        let completed = json!({"type": "response.completed", "sequence_number": 0, "response": {"id": "resp_n",
            "object": "response", "status": "completed", "model": GPT, "output": [],
            "usage": {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 3}, "output_tokens": 2}}});
        native.feed(format!("event: response.completed\ndata: {completed}\n\n").as_bytes());
        native.finish();
        let usage = native.usage().unwrap();
        assert_eq!((usage.prompt_tokens, usage.cache_read_tokens, usage.completion_tokens), (7, 3, 2));
        assert_eq!(native.id(), Some("resp_n"));
        assert!(native.error().is_none());
    }

    #[test]
    fn previous_response_id_is_refused_and_drop_params_keeps_the_request_whole() {
        let mut wire = Responses::new(0);
        let e = wire.parse(br#"{"model":"m","input":"hi","previous_response_id":"resp_1"}"#).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("previous_response_id")));
        let (wire, mut body) = parsed(json!({"model": "m", "input": "hi", "drop_params": true,
            "additional_drop_params": ["metadata", "input"], "metadata": {"a": "b"}, "prompt_cache_key": "k"}));
        assert_eq!(wire.drop_params(&mut body, true), vec!["metadata".to_string()]);
        assert!(body.contains_key("prompt_cache_key") && body.contains_key("input"));
        assert!(!body.contains_key("drop_params") && !body.contains_key("additional_drop_params"));
    }

    #[test]
    fn the_prompt_is_tallied_whichever_way_it_goes() {
        let (wire, body) = parsed(json!({"model": "m", "instructions": "Be brief.", "input": [
            {"role": "user", "content": "list files"},
            {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{\"cmd\":\"ls\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": "a.txt b.txt"}]}));
        let tally = wire.tally(&body);
        assert!(tally.estimate() >= 10, "{tally:?}");
    }
}
