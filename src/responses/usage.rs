//! Token counts of one Response, read from either API's usage object, for settlement.

use serde_json::{json, Value};

/// What one answer used. `input_tokens` counts every prompt token, cached ones included (as
/// OpenAI's `input_tokens` and chat's `prompt_tokens` both do); the cache counts are parts of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of `input_tokens`, those read from the prompt cache.
    pub cached_input_tokens: u64,
    /// Of `input_tokens`, those written to the prompt cache (Claude's cache creation; the
    /// Responses usage object has no field for it, so clients never see it).
    pub cache_creation_input_tokens: u64,
    /// Of `output_tokens`, those spent reasoning.
    pub reasoning_tokens: u64,
}

fn count(v: &Value, path: &[&str]) -> u64 {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_u64).unwrap_or(0)
}

impl Usage {
    /// A Responses `usage` object (`input_tokens`, `input_tokens_details.cached_tokens`,
    /// `output_tokens`, `output_tokens_details.reasoning_tokens`); `None` unless an object.
    pub fn from_responses(v: Option<&Value>) -> Option<Usage> {
        let v = v.filter(|v| v.is_object())?;
        Some(Usage {
            input_tokens: count(v, &["input_tokens"]),
            output_tokens: count(v, &["output_tokens"]),
            cached_input_tokens: count(v, &["input_tokens_details", "cached_tokens"]),
            cache_creation_input_tokens: 0,
            reasoning_tokens: count(v, &["output_tokens_details", "reasoning_tokens"]),
        })
    }

    /// A chat `usage` object as Databricks sends it: OpenAI's `prompt_tokens_details.cached_tokens`
    /// or Claude's `cache_read_input_tokens` (both already inside `prompt_tokens`), and
    /// `cache_creation_input_tokens`.
    pub fn from_chat(v: Option<&Value>) -> Option<Usage> {
        let v = v.filter(|v| v.is_object())?;
        Some(Usage {
            input_tokens: count(v, &["prompt_tokens"]),
            output_tokens: count(v, &["completion_tokens"]),
            cached_input_tokens: count(v, &["prompt_tokens_details", "cached_tokens"])
                .max(count(v, &["cache_read_input_tokens"])),
            cache_creation_input_tokens: count(v, &["cache_creation_input_tokens"]),
            reasoning_tokens: count(v, &["completion_tokens_details", "reasoning_tokens"]),
        })
    }

    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// The Responses `usage` object, with both detail objects (Codex reads them).
    pub fn to_json(&self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_input_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.total_tokens(),
        })
    }

    /// The counts settlement and pricing take: prompt = every input token, the cache reads and
    /// writes parts of it (each counted once and never more than the prompt).
    pub fn to_chat_usage(&self) -> crate::openai::Usage {
        let cache_read_tokens = self.cached_input_tokens.min(self.input_tokens);
        crate::openai::Usage {
            prompt_tokens: self.input_tokens,
            completion_tokens: self.output_tokens,
            total_tokens: self.total_tokens(),
            cache_read_tokens,
            cache_creation_tokens: self.cache_creation_input_tokens.min(self.input_tokens - cache_read_tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_usage_is_read_with_its_details() {
        let v = json!({"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 1024},
                       "output_tokens": 50, "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 1250});
        let u = Usage::from_responses(Some(&v)).unwrap();
        assert_eq!(
            u,
            Usage {
                input_tokens: 1200,
                output_tokens: 50,
                cached_input_tokens: 1024,
                cache_creation_input_tokens: 0,
                reasoning_tokens: 20
            }
        );
        assert_eq!(u.to_json(), v);
        assert_eq!(Usage::from_responses(Some(&Value::Null)), None);
        assert_eq!(Usage::from_responses(None), None);
        // Details are optional on the way in.
        let bare = Usage::from_responses(Some(&json!({"input_tokens": 3, "output_tokens": 4}))).unwrap();
        assert_eq!((bare.total_tokens(), bare.cached_input_tokens), (7, 0));
    }

    #[test]
    fn chat_usage_reads_both_cache_spellings_without_double_counting() {
        let claude = json!({"prompt_tokens": 5000, "completion_tokens": 10, "total_tokens": 5010,
                            "cache_read_input_tokens": 4000, "cache_creation_input_tokens": 900});
        let u = Usage::from_chat(Some(&claude)).unwrap();
        assert_eq!((u.input_tokens, u.cached_input_tokens, u.cache_creation_input_tokens), (5000, 4000, 900));
        assert_eq!(u.to_json()["input_tokens"], 5000, "cached tokens stay inside input_tokens");
        let gpt = json!({"prompt_tokens": 2048, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 1024},
                         "completion_tokens_details": {"reasoning_tokens": 5}});
        let u = Usage::from_chat(Some(&gpt)).unwrap();
        assert_eq!((u.cached_input_tokens, u.reasoning_tokens, u.total_tokens()), (1024, 5, 2055));
        let chat = u.to_chat_usage();
        assert_eq!((chat.prompt_tokens, chat.cache_read_tokens, chat.cache_creation_tokens), (2048, 1024, 0));
        let claude = Usage::from_chat(Some(&claude)).unwrap().to_chat_usage();
        assert_eq!((claude.prompt_tokens, claude.cache_read_tokens, claude.cache_creation_tokens), (5000, 4000, 900));
        let odd =
            Usage { input_tokens: 10, cached_input_tokens: 8, cache_creation_input_tokens: 8, ..Usage::default() };
        let odd = odd.to_chat_usage();
        assert_eq!((odd.cache_read_tokens, odd.cache_creation_tokens), (8, 2), "never more than the prompt");
    }
}
