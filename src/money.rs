//! Money, exact: an amount of US dollars in whole pico-dollars (1e-12 USD). Databricks' prices
//! (1.24999e-06 USD a token is 1,249,990 pico-dollars) and every sum of them are whole numbers,
//! so spend never drifts the way accumulated floats do. Dollars enter and leave here only.

use std::fmt;

use serde::{Deserialize, Serialize};

const PICO_PER_USD: u64 = 1_000_000_000_000;

/// An amount (or a price per token) in pico-dollars. Arithmetic saturates: no sum of money
/// wraps around to a small amount.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(u64);

impl Money {
    pub const ZERO: Money = Money(0);
    pub const MAX: Money = Money(u64::MAX);

    pub const fn from_pico(pico: u64) -> Money {
        Money(pico)
    }

    pub const fn pico(self) -> u64 {
        self.0
    }

    /// Dollars as the config and the API give them, to the nearest pico-dollar; `None` for a
    /// negative, non-finite or unrepresentable amount.
    pub fn from_usd(usd: f64) -> Option<Money> {
        let pico = (usd * PICO_PER_USD as f64).round();
        (usd.is_finite() && usd >= 0.0 && pico < u64::MAX as f64).then_some(Money(pico as u64))
    }

    /// Dollars as a JSON number (LiteLLM's answers show spend and budgets so).
    pub fn usd(self) -> f64 {
        self.0 as f64 / PICO_PER_USD as f64
    }

    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    /// A price per token times a number of tokens.
    pub fn times(self, tokens: u64) -> Money {
        Money(self.0.saturating_mul(tokens))
    }

    /// How many whole tokens at this price per token `self` pays for (all, at price 0).
    pub fn tokens_at(self, price: Money) -> u64 {
        self.0.checked_div(price.0).unwrap_or(u64::MAX)
    }
}

/// Pico-dollars, as stored and sent between the worker and its ledgers.
impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The exact decimal number of dollars: 54999910000 pico-dollars → `0.00005499991`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / PICO_PER_USD, self.0 % PICO_PER_USD);
        if frac == 0 {
            return write!(f, "{whole}.0");
        }
        let digits = format!("{frac:012}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::Money;

    #[test]
    fn dollars_in_and_out_exactly() {
        assert_eq!(Money::from_usd(1.24999e-06), Some(Money::from_pico(1_249_990)));
        assert_eq!(Money::from_pico(54_999_910).to_string(), "0.00005499991");
        assert_eq!(Money::ZERO.to_string(), "0.0");
        assert_eq!(Money::from_pico(1).to_string(), "0.000000000001");
        assert_eq!(Money::from_pico(1_500_000_000_000).to_string(), "1.5");
        assert_eq!(Money::from_pico(12_000_000_000_000).to_string(), "12.0");
        assert_eq!(Money::from_pico(250_000_000_000).usd(), 0.25);
        for bad in [-0.01, f64::NAN, f64::INFINITY, 1e8] {
            assert_eq!(Money::from_usd(bad), None, "{bad}");
        }
        assert_eq!(Money::MAX.saturating_add(Money::from_pico(1)), Money::MAX);
        assert_eq!(Money::from_pico(3).times(u64::MAX), Money::MAX);
        assert_eq!(Money::from_pico(10).tokens_at(Money::from_pico(3)), 3);
        assert_eq!(Money::from_pico(10).tokens_at(Money::ZERO), u64::MAX);
    }
}
