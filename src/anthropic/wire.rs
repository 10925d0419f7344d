//! The Messages API as one more wire format of the pipeline (`runtime::proxy`): keys, limits,
//! budget holds, routing, retries, fallbacks, timeouts, settlement and the log line come from
//! there unchanged. What is Anthropic's is decided here, per attempt: a Claude deployment gets
//! the body natively at `{api_base}/anthropic/v1/messages` (with the client's
//! `anthropic-version` and `anthropic-beta`), any other the chat translation; the answer and
//! the stream come back as Messages, their usage (cache tokens included) read on the way.

use std::cell::{Cell, RefCell};

use serde_json::{Map, Value};

use super::{
    native_answer, parse_request, prepare_upstream, prompt_tally, serves_natively, translated_answer, MessagesAnswer,
    MessagesRequest, NativeStreamRelay, TranslatedStreamRelay,
};
use crate::databricks::Answer;
use crate::openai::{ApiError, Kind, ProxyRequest};
use crate::prompt::PromptTally;
use crate::secret::Secret;
use crate::wire::{StreamRelay, UpstreamRequest, WireFormat};

/// The client's headers passed on to a native deployment.
const PASSED_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];
/// The API version sent when the client named none (the only one Anthropic has published).
const DEFAULT_VERSION: &str = "2023-06-01";

/// One Messages request.
#[derive(Debug, Default)]
pub struct Messages {
    /// The request as parsed, its body reduced to what shapes the answer (`stop_sequences`):
    /// the pipeline holds the body itself.
    shape: Option<MessagesRequest>,
    /// `anthropic-version` and `anthropic-beta` as the client sent them.
    headers: Vec<(&'static str, String)>,
    /// The prompt's estimated tokens, shown in a translated stream until Databricks reports its
    /// usage.
    prompt_estimate: Cell<u64>,
    /// What the last attempt's translation to chat left out, for the log line.
    left_out: RefCell<Vec<String>>,
}

impl Messages {
    pub fn new() -> Self {
        Messages::default()
    }

    /// The parsed request with `body` (the pipeline's, limits applied) as its body.
    fn request(&self, body: &Map<String, Value>) -> Result<MessagesRequest, ApiError> {
        let shape = self.shape.as_ref().ok_or_else(|| ApiError::internal("the Messages request was not parsed"))?;
        Ok(MessagesRequest {
            model: shape.model.clone(),
            stream: shape.stream,
            max_tokens: shape.max_tokens,
            thinking: shape.thinking,
            body: body.clone(),
        })
    }

    fn shape(&self) -> Result<&MessagesRequest, ApiError> {
        self.shape.as_ref().ok_or_else(|| ApiError::internal("the Messages request was not parsed"))
    }
}

impl WireFormat for Messages {
    fn parse(&mut self, bytes: &[u8]) -> Result<ProxyRequest, ApiError> {
        let mut request = parse_request(bytes)?;
        let body = std::mem::take(&mut request.body);
        if let Some(stops) = body.get("stop_sequences") {
            request.body.insert("stop_sequences".into(), stops.clone());
        }
        let (model, stream) = (request.model.clone(), request.stream);
        self.shape = Some(request);
        Ok(ProxyRequest { kind: Kind::Chat, model, stream, body, base64: false, include_usage: false })
    }

    fn read_headers(&mut self, header: &dyn Fn(&str) -> Option<String>) {
        self.headers = PASSED_HEADERS.iter().filter_map(|name| Some((*name, header(name)?))).collect();
        if !self.headers.iter().any(|(name, _)| *name == "anthropic-version") {
            self.headers.push(("anthropic-version", DEFAULT_VERSION.to_string()));
        }
    }

    /// The body passes to Claude as it came (LiteLLM's `drop_params` is about OpenAI's
    /// parameters); what a translation cannot carry is left out there.
    fn drop_params(&self, _body: &mut Map<String, Value>, _configured: bool) -> Vec<String> {
        Vec::new()
    }

    fn tally(&self, body: &Map<String, Value>) -> PromptTally {
        let tally = match self.request(body) {
            Ok(request) => prompt_tally(&request),
            Err(_) => PromptTally::of(Kind::Chat, body),
        };
        self.prompt_estimate.set(tally.estimate());
        tally
    }

    /// `max_tokens`, thinking included, on every deployment (a translation keeps it).
    fn max_output_tokens(&self, body: &Map<String, Value>, _endpoint: &str) -> Option<u64> {
        body.get("max_tokens").and_then(Value::as_u64)
    }

    fn choices(&self, _body: &Map<String, Value>) -> u64 {
        1
    }

    /// Nothing here: each attempt applies the cap (`prepare_upstream`), which also shrinks a
    /// thinking budget that no longer fits under it.
    fn impose_output_cap(&self, _body: &mut Map<String, Value>, _cap: u64) {}

    fn upstream_request(
        &self,
        body: &Map<String, Value>,
        endpoint: &str,
        _stream: bool,
        output_cap: Option<u64>,
    ) -> Result<UpstreamRequest, ApiError> {
        let upstream = prepare_upstream(&self.request(body)?, endpoint, output_cap)?;
        *self.left_out.borrow_mut() =
            upstream.dropped.iter().map(|field| format!("`{field}` has no chat equivalent")).collect();
        let payload = crate::json::map_to_vec(&upstream.body);
        let headers = if serves_natively(endpoint) { self.headers.clone() } else { Vec::new() };
        Ok(UpstreamRequest { route: upstream.route, body: payload, headers })
    }

    fn answer(&self, endpoint: &str, bytes: &[u8], shown: &str) -> Result<Answer, ApiError> {
        let MessagesAnswer { bytes, usage, id } = if serves_natively(endpoint) {
            native_answer(bytes, shown)?
        } else {
            translated_answer(bytes, shown, self.shape()?)?
        };
        Ok(Answer { bytes, usage: usage.map(|u| u.to_chat()), id })
    }

    fn left_out(&self) -> Vec<String> {
        self.left_out.borrow().clone()
    }

    fn relay(&self, endpoint: &str, shown: &str, secrets: Vec<Secret>) -> Box<dyn StreamRelay> {
        if serves_natively(endpoint) {
            return Box::new(NativeStreamRelay::new(shown, secrets));
        }
        match self.shape() {
            Ok(shape) => Box::new(TranslatedStreamRelay::new(shown, shape, secrets, self.prompt_estimate.get())),
            // Unreachable (a request is parsed before it is relayed): a relay without the
            // client's stop sequences or thinking.
            Err(_) => {
                let fallback = MessagesRequest {
                    model: shown.to_string(),
                    stream: true,
                    max_tokens: None,
                    thinking: super::ThinkingMode::Off,
                    body: Map::new(),
                };
                Box::new(TranslatedStreamRelay::new(shown, &fallback, secrets, self.prompt_estimate.get()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Usage;
    use serde_json::json;

    fn parsed(body: Value, headers: &[(&str, &str)]) -> (Messages, ProxyRequest) {
        let mut wire = Messages::new();
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        wire.read_headers(&|name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
        let request = wire.parse(body.to_string().as_bytes()).unwrap();
        (wire, request)
    }

    #[test]
    fn claude_gets_the_body_natively_with_the_clients_headers() {
        let body = json!({"model": "sonnet", "max_tokens": 8000, "stream": true, "stop_sequences": ["END"],
            "thinking": {"type": "enabled", "budget_tokens": 4000}, "context_management": {"edits": []},
            "messages": [{"role": "user", "content": "hi"}]});
        let (wire, request) =
            parsed(body, &[("anthropic-version", "2023-06-01"), ("anthropic-beta", "interleaved-thinking-2025-05-14")]);
        assert_eq!((request.model.as_str(), request.stream), ("sonnet", true));
        assert_eq!(wire.max_output_tokens(&request.body, "databricks-claude-sonnet-4-5"), Some(8000));
        assert_eq!(wire.choices(&request.body), 1);
        assert!(wire.tally(&request.body).estimate() > 0);

        let native = wire.upstream_request(&request.body, "databricks-claude-sonnet-4-5", true, Some(3000)).unwrap();
        assert_eq!(native.route, "anthropic/v1/messages");
        assert_eq!(
            native.headers,
            [
                ("anthropic-version", "2023-06-01".to_string()),
                ("anthropic-beta", "interleaved-thinking-2025-05-14".to_string())
            ]
        );
        let sent: Value = serde_json::from_slice(&native.body).unwrap();
        assert_eq!(sent["model"], "databricks-claude-sonnet-4-5");
        assert_eq!((sent["max_tokens"].as_u64(), sent["thinking"]["budget_tokens"].as_u64()), (Some(3000), Some(2999)));

        assert!(wire.left_out().is_empty());
        // A fallback to GPT: translated, no Anthropic headers, the cap kept.
        let chat = wire.upstream_request(&request.body, "databricks-gpt-5-1", true, Some(3000)).unwrap();
        assert_eq!((chat.route, chat.headers.len()), ("chat/completions", 0));
        let sent: Value = serde_json::from_slice(&chat.body).unwrap();
        assert_eq!((sent["model"].as_str(), sent["max_tokens"].as_u64()), (Some("databricks-gpt-5-1"), Some(3000)));
        assert_eq!(sent["stop"], json!(["END"]));
        assert_eq!(sent["stream_options"], json!({"include_usage": true}));
        assert_eq!(wire.left_out(), ["`context_management` has no chat equivalent"]);
    }

    #[test]
    fn the_version_header_is_sent_when_the_client_named_none() {
        let (wire, request) =
            parsed(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}), &[]);
        let native = wire.upstream_request(&request.body, "databricks-claude-haiku-4-5", false, None).unwrap();
        assert_eq!(native.headers, [("anthropic-version", DEFAULT_VERSION.to_string())]);
    }

    #[test]
    fn answers_carry_every_prompt_token_with_the_cache_ones_told_apart() {
        let (wire, _) =
            parsed(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}), &[]);
        let native = br#"{"id":"msg_1","type":"message","role":"assistant","model":"x","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2,"cache_creation_input_tokens":10,"cache_read_input_tokens":20}}"#;
        let answer = wire.answer("databricks-claude-sonnet-4-5", native, "m").unwrap();
        assert_eq!(
            answer.usage,
            Some(Usage {
                prompt_tokens: 33,
                completion_tokens: 2,
                total_tokens: 35,
                cache_read_tokens: 20,
                cache_creation_tokens: 10
            })
        );
        let chat = br#"{"id":"chatcmpl_1","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9,"prompt_tokens_details":{"cached_tokens":4}}}"#;
        let answer = wire.answer("databricks-gpt-5-1", chat, "m").unwrap();
        let v: Value = serde_json::from_slice(&answer.bytes).unwrap();
        assert_eq!((v["type"].as_str(), v["content"][0]["text"].as_str()), (Some("message"), Some("Hi")));
        assert_eq!(v["usage"]["input_tokens"], 3);
        assert_eq!(answer.usage.map(|u| (u.prompt_tokens, u.cache_read_tokens)), Some((7, 4)));
    }

    #[test]
    fn streams_are_relayed_per_deployment_with_their_usage() {
        let (wire, request) = parsed(
            json!({"model": "m", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        );
        wire.tally(&request.body);
        let mut native = wire.relay("databricks-claude-sonnet-4-5", "m", vec![]);
        let events = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"x\",\"content\":[],\"usage\":{\"input_tokens\":2,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":4}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let out = String::from_utf8(native.feed(events.as_bytes())).unwrap();
        assert!(out.contains("\"model\":\"m\"") && native.is_closed(), "{out}");
        assert_eq!(
            native.usage().map(|u| (u.prompt_tokens, u.completion_tokens, u.cache_read_tokens)),
            Some((7, 4, 5))
        );
        assert_eq!(native.id(), Some("msg_1"));

        let mut translated = wire.relay("databricks-gpt-5-1", "m", vec![]);
        let chunk = "data: {\"id\":\"chatcmpl_9\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":6,\"completion_tokens\":1,\"total_tokens\":7}}\n\ndata: [DONE]\n\n";
        let out = String::from_utf8(translated.feed(chunk.as_bytes())).unwrap();
        assert!(out.contains("event: message_stop") && translated.is_closed(), "{out}");
        assert_eq!(translated.usage().map(|u| u.total_tokens), Some(7));
    }
}
