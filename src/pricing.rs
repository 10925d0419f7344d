//! What a request costs, in exact units: pico-dollars (1e-12 USD) per token, so that
//! Databricks' prices (1.24999e-06 USD is 1,249,990 pico-dollars) and every sum of them are
//! whole numbers and never drift the way accumulated floats do.

use crate::config::Deployment;
use crate::money::Money;
use crate::openai::Usage;
use crate::price_table;

/// Prices per token in pico-dollars, and where they came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prices {
    pub input: Money,
    pub output: Money,
    /// A prompt token read from the prompt cache; the input price when none is known.
    #[serde(default)]
    pub cache_read: Money,
    /// A prompt token written to the prompt cache; the input price when none is known.
    #[serde(default)]
    pub cache_creation: Money,
    pub source: PriceSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    /// `model_info` (or `litellm_params`) in the config.
    Config,
    /// The built-in Databricks price table.
    Builtin,
    /// No price known: the request is charged 0 and the log says so.
    Unknown,
}

impl PriceSource {
    /// Its name, as serde writes it.
    pub fn name(self) -> &'static str {
        match self {
            PriceSource::Config => "config",
            PriceSource::Builtin => "builtin",
            PriceSource::Unknown => "unknown",
        }
    }
}

/// The prices of a deployment: its config's, else the built-in table's for its endpoint.
/// A price given for one direction only keeps the other from the table (or 0).
pub fn prices_for(deployment: &Deployment) -> Prices {
    let builtin = price_table::BUILTIN.iter().find(|(name, _, _)| *name == deployment.endpoint);
    let info = &deployment.info;
    let (input, output, source) = match (info.input_cost_per_token, info.output_cost_per_token, builtin) {
        (None, None, Some((_, input, output))) => {
            (Money::from_pico(*input), Money::from_pico(*output), PriceSource::Builtin)
        }
        (None, None, None) => (Money::ZERO, Money::ZERO, PriceSource::Unknown),
        (input, output, builtin) => (
            input.or(builtin.map(|b| Money::from_pico(b.1))).unwrap_or(Money::ZERO),
            output.or(builtin.map(|b| Money::from_pico(b.2))).unwrap_or(Money::ZERO),
            PriceSource::Config,
        ),
    };
    // Cache prices: the config's, else the table's for the endpoint, else the input price.
    let cache = price_table::BUILTIN_CACHE.iter().find(|(name, _, _)| *name == deployment.endpoint);
    let cache_read = info.cache_read_input_token_cost.or(cache.map(|c| Money::from_pico(c.1))).unwrap_or(input);
    let cache_creation = info.cache_creation_input_token_cost.or(cache.map(|c| Money::from_pico(c.2))).unwrap_or(input);
    Prices { input, output, cache_read, cache_creation, source }
}

impl Prices {
    pub const UNKNOWN: Prices = Prices {
        input: Money::ZERO,
        output: Money::ZERO,
        cache_read: Money::ZERO,
        cache_creation: Money::ZERO,
        source: PriceSource::Unknown,
    };

    /// The prices a budget's hold uses: every prompt token at the dearest of its prices.
    pub fn for_hold(self) -> Prices {
        let input = self.input.max(self.cache_read).max(self.cache_creation);
        Prices { input, cache_read: input, cache_creation: input, ..self }
    }

    /// The cost of a usage. Cached prompt tokens are part of `prompt_tokens`: each is
    /// charged once, at its cache price.
    pub fn cost(&self, usage: &Usage) -> Money {
        let read = usage.cache_read_tokens.min(usage.prompt_tokens);
        let creation = usage.cache_creation_tokens.min(usage.prompt_tokens - read);
        let uncached = usage.prompt_tokens - read - creation;
        self.tokens_cost(uncached, usage.completion_tokens)
            .saturating_add(self.cache_read.times(read))
            .saturating_add(self.cache_creation.times(creation))
    }

    /// The highest of each price, for a hold that any of several deployments may serve.
    pub fn max(self, other: Prices) -> Prices {
        Prices {
            input: self.input.max(other.input),
            output: self.output.max(other.output),
            cache_read: self.cache_read.max(other.cache_read),
            cache_creation: self.cache_creation.max(other.cache_creation),
            source: self.source,
        }
    }

    pub fn tokens_cost(&self, prompt_tokens: u64, completion_tokens: u64) -> Money {
        self.input.times(prompt_tokens).saturating_add(self.output.times(completion_tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelInfo;

    fn deployment(endpoint: &str, input: Option<u64>, output: Option<u64>) -> Deployment {
        let (input, output) = (input.map(Money::from_pico), output.map(Money::from_pico));
        let info = ModelInfo { input_cost_per_token: input, output_cost_per_token: output, ..Default::default() };
        Deployment { info, ..Deployment::for_tests(endpoint) }
    }

    #[test]
    fn litellm_charges_this_call_the_same() {
        // LiteLLM 1.108: 4 prompt and 5 completion tokens on databricks-gpt-5-1 cost 5.499991e-05 USD.
        let prices = prices_for(&deployment("databricks-gpt-5-1", None, None));
        assert_eq!(prices.source, PriceSource::Builtin);
        let cost = prices.cost(&Usage::plain(4, 5));
        assert_eq!(cost, Money::from_pico(54_999_910));
        assert_eq!(cost.to_string(), "0.00005499991");
    }

    #[test]
    fn config_prices_win_and_unknown_models_cost_nothing() {
        let p = prices_for(&deployment("databricks-gpt-5-1", Some(7), None));
        assert_eq!((p.input.pico(), p.output.pico(), p.source), (7, 9_999_990, PriceSource::Config));
        let p = prices_for(&deployment("my-finetune", None, None));
        assert_eq!((p.input, p.output, p.source), (Money::ZERO, Money::ZERO, PriceSource::Unknown));
        assert_eq!(p.tokens_cost(1000, 1000), Money::ZERO);
    }

    #[test]
    fn sums_are_exact() {
        let prices = prices_for(&deployment("databricks-gpt-oss-120b", None, None));
        let total: u64 = (0..10_000).map(|_| prices.tokens_cost(3, 7).pico()).sum();
        assert_eq!(total, 10_000 * (3 * 150_010 + 7 * 599_970));
    }

    #[test]
    fn cached_prompt_tokens_are_charged_once_at_their_cache_price() {
        let sonnet = prices_for(&Deployment::for_tests("databricks-claude-sonnet-4-5"));
        assert_eq!((sonnet.cache_read.pico(), sonnet.cache_creation.pico()), (300_020, 3_749_970));
        // Databricks' chat usage: 1,000 prompt tokens of which 600 read and 300 written.
        let usage = Usage::from_value(Some(&serde_json::json!({
            "prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010,
            "cache_read_input_tokens": 600, "cache_creation_input_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 600}
        })))
        .unwrap();
        assert_eq!((usage.cache_read_tokens, usage.cache_creation_tokens), (600, 300));
        let expected = 100 * 2_999_990 + 600 * 300_020 + 300 * 3_749_970 + 10 * 15_000_020;
        assert_eq!(sonnet.cost(&usage).pico(), expected);
        // More cache tokens than prompt tokens (a malformed usage) never charge beyond the prompt.
        let odd = Usage { cache_read_tokens: 5_000, cache_creation_tokens: 5_000, ..Usage::plain(1000, 0) };
        assert_eq!(sonnet.cost(&odd).pico(), 1000 * 300_020);
        // A model without cache prices charges cached tokens as input; a hold covers the dearest.
        let gpt = prices_for(&Deployment::for_tests("databricks-gpt-5-1"));
        assert_eq!(gpt.cost(&Usage { cache_read_tokens: 4, ..Usage::plain(4, 5) }), gpt.cost(&Usage::plain(4, 5)));
        assert_eq!(sonnet.for_hold().input.pico(), 3_749_970);
    }
}
