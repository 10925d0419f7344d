//! What differs between the APIs the gateway serves: how a body is parsed, what it asks of a
//! budget, how it is translated for each deployment, and how the answer and the stream come
//! back. The pipeline (`runtime::proxy`) is written once against [`WireFormat`]; a new API
//! plugs in as one more implementation and inherits authentication, admission, routing,
//! settlement and logging unchanged.

use serde_json::{Map, Value};

use crate::databricks::{self, Answer};
use crate::openai::{self, ApiError, Kind, ProxyRequest, Usage};
use crate::prompt::{self, PromptTally};
use crate::secret::Secret;
use crate::stream::ChatStreamRelay;

/// One API's wire format, for one request: parsing it may set options (embeddings asked as
/// base64, usage asked in the stream) that shape its answer.
pub trait WireFormat {
    /// Parses and validates the client's body.
    fn parse(&mut self, bytes: &[u8]) -> Result<ProxyRequest, ApiError>;

    /// Reads what the format takes from the client's headers (`header` looks one up by its
    /// lower-case name), before `parse`.
    fn read_headers(&mut self, _header: &dyn Fn(&str) -> Option<String>) {}

    /// The body may carry token ids where text is expected (embeddings): the runtime decodes
    /// them before anything counts the prompt.
    fn takes_token_ids(&self) -> bool {
        false
    }

    /// Removes what Databricks does not take, when `drop_params` is set; returns the names.
    fn drop_params(&self, body: &mut Map<String, Value>, configured: bool) -> Vec<String>;

    /// What the prompt weighs, for limits and the budget's hold.
    fn tally(&self, body: &Map<String, Value>) -> PromptTally;

    /// The most output tokens the request may produce on `endpoint`, once translated for it.
    fn max_output_tokens(&self, body: &Map<String, Value>, endpoint: &str) -> Option<u64>;

    /// How many answers the request asks for (`n`, `best_of`).
    fn choices(&self, body: &Map<String, Value>) -> u64;

    /// Imposes a budget's cap on the output tokens.
    fn impose_output_cap(&self, body: &mut Map<String, Value>, cap: u64);

    /// What one attempt on `endpoint` sends: each attempt translates its own copy of the
    /// body, so a fallback to another model family gets its own translation, and
    /// `output_cap` is never raised by one.
    fn upstream_request(
        &self,
        body: &Map<String, Value>,
        endpoint: &str,
        stream: bool,
        output_cap: Option<u64>,
    ) -> Result<UpstreamRequest, ApiError>;

    /// `endpoint`'s whole answer as the client sees it, named `shown`.
    fn answer(&self, endpoint: &str, bytes: &[u8], shown: &str) -> Result<Answer, ApiError>;

    /// The relay of `endpoint`'s streamed answer; `secrets` are scrubbed from errors in it.
    fn relay(&self, endpoint: &str, shown: &str, secrets: Vec<Secret>) -> Box<dyn StreamRelay>;

    /// What the last attempt's translation could not carry and left out, one sentence each
    /// (for the log line).
    fn left_out(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One attempt's request to Databricks.
#[derive(Debug)]
pub struct UpstreamRequest {
    /// The route under the deployment's `api_base` (`chat/completions`, ...).
    pub route: &'static str,
    pub body: Vec<u8>,
    /// Headers passed on to Databricks besides its authorization (`anthropic-version`, ...).
    pub headers: Vec<(&'static str, String)>,
}

/// The relay of one upstream stream to the client, as a pure state machine: bytes in (cut
/// anywhere), the client's bytes out, and what the stream said about its usage.
pub trait StreamRelay {
    /// Upstream bytes; returns what to send to the client now.
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8>;
    /// The upstream ended.
    fn finish(&mut self) -> Vec<u8>;
    /// The upstream failed (read error, idle timeout).
    fn fail(&mut self, error: ApiError) -> Vec<u8>;
    /// The client's stream is complete: stop reading the upstream.
    fn is_closed(&self) -> bool;
    /// The usage the upstream reported, if it did.
    fn usage(&self) -> Option<Usage>;
    /// Characters generated so far, to estimate a usage the upstream never sent.
    fn generated_chars(&self) -> u64;
    fn chunks(&self) -> u64;
    /// The answer's id, once seen.
    fn id(&self) -> Option<&str>;
    /// The error that ended the stream, if one did.
    fn error(&self) -> Option<&ApiError>;
}

/// OpenAI's chat completions, legacy completions and embeddings, served by Databricks'
/// OpenAI-compatible routes.
#[derive(Clone, Copy, Debug)]
pub struct OpenAi {
    pub kind: Kind,
    base64: bool,
    include_usage: bool,
}

impl OpenAi {
    pub fn new(kind: Kind) -> Self {
        OpenAi { kind, base64: false, include_usage: false }
    }
}

impl WireFormat for OpenAi {
    fn parse(&mut self, bytes: &[u8]) -> Result<ProxyRequest, ApiError> {
        let request = openai::parse_request(self.kind, bytes)?;
        self.base64 = request.base64;
        self.include_usage = request.include_usage;
        Ok(request)
    }

    fn takes_token_ids(&self) -> bool {
        self.kind == Kind::Embedding
    }

    fn drop_params(&self, body: &mut Map<String, Value>, configured: bool) -> Vec<String> {
        databricks::drop_params(self.kind, body, configured)
    }

    fn tally(&self, body: &Map<String, Value>) -> PromptTally {
        PromptTally::of(self.kind, body)
    }

    fn max_output_tokens(&self, body: &Map<String, Value>, endpoint: &str) -> Option<u64> {
        databricks::upstream_max_tokens(self.kind, body, endpoint)
    }

    fn choices(&self, body: &Map<String, Value>) -> u64 {
        prompt::choices(body)
    }

    fn impose_output_cap(&self, body: &mut Map<String, Value>, cap: u64) {
        body.remove("max_completion_tokens");
        body.insert("max_tokens".into(), cap.into());
    }

    fn upstream_request(
        &self,
        body: &Map<String, Value>,
        endpoint: &str,
        stream: bool,
        output_cap: Option<u64>,
    ) -> Result<UpstreamRequest, ApiError> {
        let payload = databricks::prepared_payload(self.kind, body, endpoint, stream, output_cap);
        Ok(UpstreamRequest { route: self.kind.route(), body: payload, headers: Vec::new() })
    }

    fn answer(&self, _endpoint: &str, bytes: &[u8], shown: &str) -> Result<Answer, ApiError> {
        databricks::normalize_answer(self.kind, bytes, shown, self.base64)
    }

    fn relay(&self, _endpoint: &str, shown: &str, secrets: Vec<Secret>) -> Box<dyn StreamRelay> {
        Box::new(ChatStreamRelay::new(shown, secrets, self.include_usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attempt_gets_its_own_translation_and_the_cap_is_kept() {
        let mut wire = OpenAi::new(Kind::Chat);
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"reasoning_effort":"low"}"#;
        let request = wire.parse(body).unwrap();
        let attempt = |endpoint: &str, cap: Option<u64>| {
            let upstream = wire.upstream_request(&request.body, endpoint, false, cap).unwrap();
            assert_eq!(upstream.route, "chat/completions");
            serde_json::from_slice::<Value>(&upstream.body).unwrap()
        };
        let claude = attempt("databricks-claude-sonnet-4-5", None);
        let capped = attempt("databricks-claude-sonnet-4-5", Some(100));
        let gpt = attempt("databricks-gpt-5", Some(100));
        assert!(claude.get("thinking").is_some() && claude.get("reasoning_effort").is_none());
        assert_eq!(gpt["reasoning_effort"], "low");
        assert!(capped["max_tokens"].as_u64().is_none_or(|m| m <= 100), "{capped}");
        assert!(request.body.get("thinking").is_none(), "the client's body is left as it came");
    }

    #[test]
    fn embeddings_take_token_ids_and_answer_base64_when_asked() {
        let mut wire = OpenAi::new(Kind::Embedding);
        assert!(wire.takes_token_ids());
        wire.parse(br#"{"model":"e","input":"hi","encoding_format":"base64"}"#).unwrap();
        let answer = wire.answer("databricks-gte-large-en", br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5]}],"model":"x","usage":{"prompt_tokens":1,"total_tokens":1}}"#, "e").unwrap();
        let v: Value = serde_json::from_slice(&answer.bytes).unwrap();
        assert!(v["data"][0]["embedding"].is_string(), "{v}");
        assert_eq!(v["model"], "e");
    }
}
