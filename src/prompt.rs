//! What of a request becomes prompt tokens, measured two ways before it is forwarded:
//!
//! - an **estimate**, for token rate limits (`tpm_limit`, `model_tpm_limit`, deployment `tpm`),
//!   in the manner of OpenAI's own limiter: about four characters of text a token plus a few
//!   tokens a message. Settlement replaces it with the real usage.
//! - a **bound**, for budgets: never below what the model will bill for the prompt, and as
//!   close to it as can be shown. A budget holds the bound (and the most the output can cost)
//!   until the request settles, so racing requests never push spend past it.
//!
//! Why the bound is sound:
//! 1. Every model Databricks serves uses a subword tokenizer with byte fallback: byte-level BPE
//!    (GPT-5 and gpt-oss with o200k, Llama 3's tiktoken-style vocabulary, Claude) or
//!    SentencePiece with byte fallback (Gemini, Gemma). A token of such a tokenizer covers at
//!    least one byte of the text's UTF-8 encoding, so a text of `b` bytes is at most `b` tokens.
//!    SentencePiece may add one dummy-prefix token to a text segment: one more per string.
//! 2. Only what the client wrote is counted that way: message text and text parts, tool-call
//!    names, ids and arguments, reasoning sent back, the legacy `prompt`, embedding inputs.
//!    JSON punctuation, field names and `type` tags are not text the model reads.
//! 3. What a chat template adds (special tokens, role headers, default system text such as
//!    Llama's date header or gpt-oss's harmony preamble, Claude's tool-use system prompt) is an
//!    allowance per request, per message and per tool, for the model's family ([`Template`]).
//! 4. Tool definitions and JSON schemas are rendered from their JSON (often indented): at most
//!    the compact JSON's bytes, plus two tokens per structural character (a line break with
//!    its indent, and a space, may each be a token of their own).
//! 5. Images are billed by their pixels, not by the bytes sent: each image part counts as the
//!    dearest image the family bills.
//!
//! Not covered: binary documents (`file` parts: a PDF page can bill more tokens than its bytes)
//! count by their bytes, which is a bound for text but not always for rendered pages.

use serde_json::{Map, Value};

use crate::family::Family;
use crate::openai::Kind;

/// Tokens a chat template adds around what the client wrote, for one model family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    /// Once per request: begin-of-text, the assistant's generation header, default system text.
    pub request: u64,
    /// Per message: the role and its header and end tokens.
    pub message: u64,
    /// Once when any tool is defined: the tool-use instructions the template adds.
    pub tools: u64,
    /// Per tool definition: its framing.
    pub tool: u64,
    /// Per image part: the most the family bills for one image.
    pub image: u64,
}

/// For families whose image billing is not documented, or that take no images (Databricks
/// refuses those, and a refused request costs nothing).
const IMAGE_UNKNOWN: u64 = 4_096;

impl Template {
    /// The allowances of the family an endpoint belongs to, found by its name.
    pub fn for_endpoint(endpoint: &str) -> Template {
        match Family::of(endpoint) {
            // Anthropic documents its tool-use system prompt at 346 tokens (Claude 4 models,
            // tool_choice auto); images are resized to at most 1.15 megapixels, w*h/750 tokens.
            Family::Claude => Template { request: 16, message: 8, tools: 512, tool: 16, image: 1_600 },
            // The harmony format opens with a system message (identity, knowledge cutoff, date,
            // reasoning level, channels) and a developer message holding the tools namespace.
            Family::GptOss => Template { request: 128, message: 8, tools: 128, tool: 16, image: IMAGE_UNKNOWN },
            // High detail: scaled into 2048 x 768, at most 8 tiles of 512 px (85 + 170 each).
            Family::Gpt => Template { request: 32, message: 8, tools: 128, tool: 16, image: 1_536 },
            // Llama 3.1+ templates add a system header with the knowledge cutoff and the date.
            Family::Llama => Template { request: 48, message: 8, tools: 256, tool: 16, image: IMAGE_UNKNOWN },
            Family::Gemini => Template { request: 16, message: 8, tools: 128, tool: 16, image: IMAGE_UNKNOWN },
            // An unknown template: room for a preamble as long as the largest above.
            Family::Other => Template { request: 128, message: 16, tools: 512, tool: 32, image: IMAGE_UNKNOWN },
        }
    }

    /// The larger allowance of each kind: the bound for a request that either may serve.
    pub fn max(self, other: Template) -> Template {
        Template {
            request: self.request.max(other.request),
            message: self.message.max(other.message),
            tools: self.tools.max(other.tools),
            tool: self.tool.max(other.tool),
            image: self.image.max(other.image),
        }
    }
}

/// Tokens added to each legacy prompt or embedding input: begin and end tokens (`[CLS]`,
/// `[SEP]`, `<s>`), with room to spare.
const SEGMENT_ALLOWANCE: u64 = 4;
/// What the estimate takes an image for (a 1024 x 1024 picture at high detail).
const IMAGE_ESTIMATE: u64 = 765;
/// The estimate's tokens per message and per request (OpenAI's counting guide: 3 and 3).
const MESSAGE_ESTIMATE: u64 = 3;
const REQUEST_ESTIMATE: u64 = 3;

/// What becomes tokens in one request, counted once; the allowances are applied per family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PromptTally {
    /// UTF-8 bytes of the text the client wrote.
    text_bytes: u64,
    /// Characters of that text (for the estimate).
    text_chars: u64,
    /// Separate strings of text (a dummy-prefix token each, at most).
    strings: u64,
    /// Chat messages (the template's allowances apply only to chat).
    messages: u64,
    chat: bool,
    /// Legacy prompts and embedding inputs.
    segments: u64,
    images: u64,
    /// Tool definitions (and a `json_schema` response format, which templates render alike).
    tools: u64,
    tool_json_bytes: u64,
    tool_json_structure: u64,
}

impl PromptTally {
    /// Counts what of `body` becomes tokens for an endpoint of `kind`.
    pub fn of(kind: Kind, body: &Map<String, Value>) -> PromptTally {
        let mut t = PromptTally::default();
        match kind {
            Kind::Chat => {
                t.chat = true;
                if let Some(Value::Array(messages)) = body.get("messages") {
                    for message in messages {
                        t.messages += 1;
                        t.walk(message);
                    }
                }
                for field in ["tools", "functions"] {
                    if let Some(Value::Array(tools)) = body.get(field) {
                        for tool in tools {
                            t.add_definition(tool);
                        }
                    }
                }
                if let Some(format) = body.get("response_format").filter(|f| f.get("json_schema").is_some()) {
                    t.add_definition(format);
                }
                if let Some(choice @ Value::Object(_)) = body.get("tool_choice") {
                    t.walk(choice);
                }
            }
            Kind::Completion => {
                t.add_segments(body.get("prompt"), "");
                if let Some(Value::String(suffix)) = body.get("suffix") {
                    t.add_text(suffix);
                }
            }
            Kind::Embedding => {
                // An instruction is prefixed to every input it applies to.
                let instruction = body.get("instruction").and_then(Value::as_str).unwrap_or("");
                t.add_segments(body.get("input"), instruction);
            }
        }
        t
    }

    /// The most prompt tokens the request can be billed for by a model with `template`.
    pub fn bound(&self, template: &Template) -> u64 {
        let mut total = self
            .text_bytes
            .saturating_add(self.strings)
            .saturating_add(self.segments.saturating_mul(SEGMENT_ALLOWANCE))
            .saturating_add(self.images.saturating_mul(template.image))
            .saturating_add(self.tool_json_bytes)
            .saturating_add(self.tool_json_structure.saturating_mul(2))
            .saturating_add(self.tools.saturating_mul(template.tool));
        if self.tools > 0 {
            total = total.saturating_add(template.tools);
        }
        if self.chat {
            total =
                total.saturating_add(template.request).saturating_add(self.messages.saturating_mul(template.message));
        }
        total
    }

    /// A typical count of the prompt's tokens, for rate limits.
    pub fn estimate(&self) -> u64 {
        let mut total = self
            .text_chars
            .div_ceil(4)
            .saturating_add(self.tool_json_bytes.div_ceil(4))
            .saturating_add(self.images.saturating_mul(IMAGE_ESTIMATE))
            .saturating_add(self.segments);
        if self.chat {
            total =
                total.saturating_add(REQUEST_ESTIMATE).saturating_add(self.messages.saturating_mul(MESSAGE_ESTIMATE));
        }
        total
    }

    fn add_text(&mut self, text: &str) {
        self.text_bytes = self.text_bytes.saturating_add(text.len() as u64);
        self.text_chars = self.text_chars.saturating_add(text.chars().count() as u64);
        self.strings += 1;
    }

    /// A text, or a list of texts, each a segment with `prefix` before it.
    fn add_segments(&mut self, value: Option<&Value>, prefix: &str) {
        let add = |t: &mut PromptTally, text: &str| {
            t.segments += 1;
            t.add_text(text);
            if !prefix.is_empty() {
                t.add_text(prefix);
            }
        };
        match value {
            Some(Value::String(text)) => add(self, text),
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(text) => add(self, text),
                        // Anything else was refused by validation; count its text anyway.
                        other => {
                            self.segments += 1;
                            self.walk(other);
                        }
                    }
                }
            }
            Some(other) => self.walk(other),
            None => {}
        }
    }

    /// A tool definition or schema: its compact JSON and its structure.
    fn add_definition(&mut self, definition: &Value) {
        // The compact JSON (`definition.to_string()`'s bytes).
        let json = crate::json::to_vec(definition);
        self.tools += 1;
        self.tool_json_bytes = self.tool_json_bytes.saturating_add(json.len() as u64);
        let structure = json.iter().filter(|b| matches!(b, b'{' | b'[' | b',' | b':')).count() as u64;
        self.tool_json_structure = self.tool_json_structure.saturating_add(structure);
    }

    /// Counts every string the model reads inside a message or part; an image part counts as
    /// an image, whatever its URL or data.
    fn walk(&mut self, value: &Value) {
        match value {
            Value::String(text) => self.add_text(text),
            Value::Array(items) => items.iter().for_each(|v| self.walk(v)),
            Value::Object(fields) => {
                if is_image(fields) {
                    self.images += 1;
                    return;
                }
                for (name, v) in fields {
                    // Tags and settings, not text: the role is in the per-message allowance.
                    if !matches!(name.as_str(), "type" | "role" | "cache_control") {
                        self.walk(v);
                    }
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// An image part: typed as one, or untyped with an `image_url`. One look at each field (the
/// parts are small: hashing a key for each lookup costs more than reading them).
fn is_image(part: &Map<String, Value>) -> bool {
    let (mut kind, mut has_image_url) = (None, false);
    for (name, value) in part {
        match name.as_str() {
            "type" => kind = Some(value),
            "image_url" => has_image_url = true,
            _ => {}
        }
    }
    match kind {
        Some(kind) => matches!(kind.as_str(), Some("image_url" | "image" | "input_image")),
        None => has_image_url,
    }
}

/// How many completions one request asks for: `n` (and `best_of` for legacy completions,
/// which generates that many and returns the best). Each may use the whole `max_tokens`.
pub fn choices(body: &Map<String, Value>) -> u64 {
    let get = |field: &str| body.get(field).and_then(Value::as_u64).unwrap_or(1).max(1);
    get("n").max(get("best_of"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tally(kind: Kind, body: Value) -> PromptTally {
        PromptTally::of(kind, body.as_object().unwrap())
    }

    fn chat(body: Value) -> PromptTally {
        tally(Kind::Chat, body)
    }

    /// A tokenizer that no real one beats: one token per byte of every string the template
    /// could show (so JSON of tools and image data excluded), used to check the bound.
    fn worst_case_text_tokens(value: &Value) -> u64 {
        match value {
            Value::String(s) => s.len() as u64,
            Value::Array(items) => items.iter().map(worst_case_text_tokens).sum(),
            Value::Object(fields) => fields
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "type" | "role" | "cache_control" | "image_url"))
                .map(|(_, v)| worst_case_text_tokens(v))
                .sum(),
            _ => 0,
        }
    }

    #[test]
    fn hello_is_bounded_tightly_and_estimated_like_openai() {
        let t = chat(json!({"model": "m", "messages": [{"role": "user", "content": "Hello!"}]}));
        let claude = Template::for_endpoint("databricks-claude-haiku-4-5");
        // 6 bytes + 1 dummy prefix + 8 for the message + 16 for the request.
        assert_eq!(t.bound(&claude), 31);
        // 6 chars / 4 → 2, + 3 per message + 3 per request.
        assert_eq!(t.estimate(), 8);
        // The whole body's bytes (the old bound) were far above.
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "Hello!"}]}).to_string();
        assert!(body.len() as u64 > t.bound(&claude));
    }

    #[test]
    fn the_bound_covers_every_string_the_model_reads_on_a_realistic_corpus() {
        let long_history: Vec<Value> = (0..40)
            .map(|i| {
                json!({"role": if i % 2 == 0 {"user"} else {"assistant"},
                       "content": format!("Turn {i}: let us discuss the résumé of naïve café owners — 日本語のテキスト 🚀 {}", "x".repeat(i * 7))})
            })
            .collect();
        let corpus = [
            json!({"messages": long_history}),
            json!({"messages": [
                {"role": "system", "content": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": "What is the weather in Paris and Berlin?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Berlin\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18°C, sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": "12°C, rain"}],
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}]}),
            json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in these pictures?"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(200_000))}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}]}]}),
            json!({"messages": [
                {"role": "user", "content": "Think hard."},
                {"role": "assistant", "content": "42", "reasoning_content": "Deep thought…",
                 "thinking_blocks": [{"type": "thinking", "thinking": "Deep thought…", "signature": "sig=="}]},
                {"role": "user", "content": "Why?"}]}),
        ];
        for body in corpus {
            let t = chat(body.clone());
            let messages = body["messages"].as_array().unwrap();
            let images = messages
                .iter()
                .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
                .filter(|p| p["type"] == "image_url")
                .count() as u64;
            let tools: Vec<Value> = body.get("tools").and_then(Value::as_array).cloned().unwrap_or_default();
            let tools_json: u64 = tools.iter().map(|d| d.to_string().len() as u64).sum();
            let structure: u64 = tools
                .iter()
                .map(|d| d.to_string().bytes().filter(|b| matches!(b, b'{' | b'[' | b',' | b':')).count() as u64)
                .sum();
            for endpoint in ["databricks-claude-sonnet-4-5", "databricks-gpt-5-1", "databricks-gpt-oss-120b", "custom"]
            {
                let template = Template::for_endpoint(endpoint);
                let tool_allowance =
                    if tools.is_empty() { 0 } else { template.tools + template.tool * tools.len() as u64 };
                // One token per byte of text, the template's allowances, images at their dearest
                // and tools at their compact JSON: the bound never goes below this...
                let floor = worst_case_text_tokens(&body["messages"])
                    + template.request
                    + template.message * messages.len() as u64
                    + template.image * images
                    + tools_json
                    + tool_allowance;
                let bound = t.bound(&template);
                assert!(bound >= floor, "{endpoint}: {bound} < {floor}");
                // ...and adds nothing but a dummy prefix per string and the tools' indentation.
                assert!(bound <= floor + t.strings + 2 * structure, "{endpoint}: {bound} too loose over {floor}");
            }
            // The estimate stays below the bound (it is not a bound).
            assert!(t.estimate() <= t.bound(&Template::for_endpoint("databricks-claude-sonnet-4-5")) + 765 * 2);
        }
    }

    #[test]
    fn image_parts_are_told_by_their_type_or_an_untyped_image_url() {
        let part = |v: Value| is_image(v.as_object().unwrap());
        assert!(part(json!({"type": "image_url", "image_url": {"url": "u"}})));
        assert!(part(json!({"type": "image"})) && part(json!({"type": "input_image"})));
        assert!(part(json!({"image_url": "u"})));
        assert!(!part(json!({"type": "text", "image_url": "u"})));
        assert!(!part(json!({"type": null, "image_url": "u"})), "a null type is a type");
        assert!(!part(json!({"type": 3})) && !part(json!({"text": "x"})) && !part(json!({})));
    }

    #[test]
    fn image_data_counts_as_an_image_not_as_text() {
        let with_data = chat(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(3_000_000))}}]}]}));
        let claude = Template::for_endpoint("databricks-claude-sonnet-4-5");
        assert_eq!(with_data.bound(&claude), 16 + 8 + 1_600);
    }

    #[test]
    fn tools_count_their_json_and_the_template_preamble() {
        let tool = json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}});
        let t = chat(json!({"messages": [{"role": "user", "content": "hi"}], "tools": [tool.clone()]}));
        let claude = Template::for_endpoint("claude");
        let json = tool.to_string();
        let structure = json.bytes().filter(|b| matches!(b, b'{' | b'[' | b',' | b':')).count() as u64;
        assert_eq!(t.bound(&claude), 16 + 8 + 2 + 1 + json.len() as u64 + 2 * structure + 16 + 512);
    }

    #[test]
    fn the_dearest_family_wins_across_deployments() {
        let t = chat(json!({"messages": [{"role": "user", "content": "hi"}]}));
        let claude = Template::for_endpoint("databricks-claude-sonnet-4-5");
        let oss = Template::for_endpoint("databricks-gpt-oss-120b");
        assert_eq!(t.bound(&claude.max(oss)), t.bound(&oss).max(t.bound(&claude)));
    }

    #[test]
    fn legacy_prompts_and_embedding_inputs_are_segments() {
        let t = tally(Kind::Completion, json!({"prompt": ["abc", "de"]}));
        assert_eq!(t.bound(&Template::for_endpoint("x")), 5 + 2 + 2 * SEGMENT_ALLOWANCE);
        let e = tally(Kind::Embedding, json!({"input": ["abc", "de"], "instruction": "q: "}));
        assert_eq!(e.bound(&Template::for_endpoint("x")), 5 + 2 * 3 + 4 + 2 * SEGMENT_ALLOWANCE);
        // No chat template around embeddings.
        assert_eq!(tally(Kind::Embedding, json!({"input": "a"})).bound(&Template::for_endpoint("x")), 1 + 1 + 4);
    }

    #[test]
    fn unicode_counts_bytes_for_the_bound_and_characters_for_the_estimate() {
        let t = chat(json!({"messages": [{"role": "user", "content": "日本語"}]}));
        assert_eq!(t.text_bytes, 9);
        assert_eq!(t.text_chars, 3);
    }

    #[test]
    fn n_and_best_of_multiply_the_choices() {
        let body = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(choices(&body(json!({}))), 1);
        assert_eq!(choices(&body(json!({"n": 3}))), 3);
        assert_eq!(choices(&body(json!({"n": 2, "best_of": 5}))), 5);
        assert_eq!(choices(&body(json!({"n": 0}))), 1);
    }

    #[test]
    fn huge_inputs_saturate_instead_of_wrapping() {
        let t =
            PromptTally { text_bytes: u64::MAX - 1, strings: 5, images: u64::MAX, chat: true, ..Default::default() };
        assert_eq!(t.bound(&Template::for_endpoint("x")), u64::MAX);
        assert_eq!(t.estimate(), u64::MAX);
    }
}
