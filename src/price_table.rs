//! Databricks pay-per-token prices (USD per token as LiteLLM's price map has them, in
//! pico-dollars): endpoint, input, output. Data only, so that `build.rs` can read it too and
//! warn about models nobody can price.

pub const BUILTIN: [(&str, u64, u64); 8] = [
    ("databricks-claude-sonnet-4-5", 2_999_990, 15_000_020),
    ("databricks-claude-haiku-4-5", 1_000_020, 5_000_030),
    ("databricks-gpt-5-1", 1_249_990, 9_999_990),
    ("databricks-gemini-2-5-pro", 1_249_990, 9_999_990),
    ("databricks-meta-llama-3-3-70b-instruct", 500_010, 1_500_030),
    ("databricks-gpt-oss-120b", 150_010, 599_970),
    ("databricks-gte-large-en", 129_990, 0),
    ("databricks-bge-large-en", 100_030, 0),
];

/// Prompt-cache prices (read, write) of the endpoints that cache on request (Claude).
/// Sonnet's are Databricks' list prices; Haiku's follow Anthropic's ratios to its input price
/// (a read 0.1x, a five-minute write 1.25x).
pub const BUILTIN_CACHE: [(&str, u64, u64); 2] =
    [("databricks-claude-sonnet-4-5", 300_020, 3_749_970), ("databricks-claude-haiku-4-5", 100_002, 1_250_025)];

/// Whether the gateway knows a price for `endpoint` without the config giving one.
pub fn has_builtin_price(endpoint: &str) -> bool {
    BUILTIN.iter().any(|(name, _, _)| *name == endpoint)
}
