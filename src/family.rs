//! The model family an endpoint belongs to, found once by its name: what its chat template
//! adds (`prompt`) and which reasoning parameter it takes (`databricks`) both follow from it.

/// A family of models served by Databricks, by the name of the endpoint serving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Claude,
    /// OpenAI's open-weight models (harmony format).
    GptOss,
    Gpt,
    Llama,
    Gemini,
    Other,
}

impl Family {
    /// Case-insensitive: `databricks-claude-sonnet-4-5` and `Claude-Custom` are both Claude.
    pub fn of(endpoint: &str) -> Family {
        let name = endpoint.to_ascii_lowercase();
        if name.contains("claude") {
            Family::Claude
        } else if name.contains("gpt-oss") {
            Family::GptOss
        } else if name.contains("gpt") {
            Family::Gpt
        } else if name.contains("llama") {
            Family::Llama
        } else if name.contains("gemini") || name.contains("gemma") {
            Family::Gemini
        } else {
            Family::Other
        }
    }

    /// OpenAI's reasoning models (GPT-5, gpt-oss) take `reasoning_effort` and refuse `thinking`.
    pub fn takes_reasoning_effort(self) -> bool {
        matches!(self, Family::Gpt | Family::GptOss)
    }
}

#[cfg(test)]
mod tests {
    use super::Family;

    #[test]
    fn families_are_found_by_name_whatever_the_case() {
        for (endpoint, family) in [
            ("databricks-claude-sonnet-4-5", Family::Claude),
            ("My-Claude-Endpoint", Family::Claude),
            ("databricks-gpt-oss-120b", Family::GptOss),
            ("databricks-gpt-5", Family::Gpt),
            ("DATABRICKS-GPT-5-MINI", Family::Gpt),
            ("databricks-meta-llama-3-3-70b-instruct", Family::Llama),
            ("databricks-gemini-2-5-pro", Family::Gemini),
            ("databricks-gemma-3-12b", Family::Gemini),
            ("databricks-gte-large-en", Family::Other),
        ] {
            assert_eq!(Family::of(endpoint), family, "{endpoint}");
        }
        assert!(Family::Gpt.takes_reasoning_effort() && Family::GptOss.takes_reasoning_effort());
        assert!(!Family::Claude.takes_reasoning_effort() && !Family::Llama.takes_reasoning_effort());
    }
}
