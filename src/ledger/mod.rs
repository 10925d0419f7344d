//! The ledger's rules: rate limits, in-flight slots, budget reservations and spend, as a pure
//! function of (state, now, request). One Durable Object per key holds a [`LedgerState`]
//! and only loads it, calls these functions and saves it; so every rule is tested natively.
//!
//! - Requests and tokens per minute use a sliding log of the last 60 s: at most `rpm`
//!   admissions in any 60 s, never 2x at a window boundary.
//! - Admission holds tokens against token limits (the prompt's estimate + `max_tokens` × `n`)
//!   and the worst-case cost against a budget (the prompt's sound bound, see `prompt`);
//!   settlement replaces both with the real usage. A reservation whose settlement never comes
//!   (its isolate died) stops holding a slot when its lease ends, and is charged as reserved
//!   after an hour; a late settlement then corrects that charge instead of adding to it.
//! - Settling the same request twice counts it once.
//! - A key's per-model budgets (`model_max_budget`) are held and charged the same way, each
//!   against the spend on its model in its own period, beside the key's own budget.

pub mod messages;
mod read;
mod window;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::keys::KeyRecord;
use crate::money::Money;
use crate::pricing::Prices;
use crate::time::Duration;
pub use window::Entries;

pub const WINDOW_MS: u64 = 60_000;
/// An unsettled reservation older than this is charged as reserved.
pub const RESERVATION_MAX_MS: u64 = 3_600_000;
/// How long an estimated charge is remembered so that a late settlement can correct it.
const ESTIMATE_MEMORY_MS: u64 = 24 * 3_600_000;
/// Completion tokens reserved against a tokens-per-minute limit when a request sets no
/// `max_tokens`; settlement corrects it.
pub const DEFAULT_COMPLETION_ESTIMATE: u64 = 256;

/// A key's (or a deployment's) limits, as the request that consults the ledger states them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_parallel: Option<u64>,
    #[serde(default)]
    pub model_rpm: BTreeMap<String, u64>,
    #[serde(default)]
    pub model_tpm: BTreeMap<String, u64>,
    /// Pico-dollars.
    pub max_budget: Option<Money>,
    pub budget_duration: Option<String>,
    /// Pico-dollars.
    pub soft_budget: Option<Money>,
    /// A key's budgets per model group (`model_max_budget`), in pico-dollars, and the period
    /// of those that reset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_budgets: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_budget_periods: BTreeMap<String, String>,
}

impl Limits {
    pub fn from_key(r: &KeyRecord) -> Self {
        Limits {
            rpm: r.rpm_limit,
            tpm: r.tpm_limit,
            max_parallel: r.max_parallel_requests,
            model_rpm: r.model_rpm_limit.clone(),
            model_tpm: r.model_tpm_limit.clone(),
            max_budget: r.max_budget,
            budget_duration: r.budget_duration.clone(),
            soft_budget: r.soft_budget,
            model_budgets: r.model_max_budget.clone(),
            model_budget_periods: r.model_budget_period.clone(),
        }
    }

    /// Whether a request must be admitted before it is forwarded. Keys without limits or a
    /// budget skip that round trip; their usage is still settled afterwards.
    pub fn needs_admission(&self) -> bool {
        self.rpm.is_some()
            || self.tpm.is_some()
            || self.max_parallel.is_some()
            || !self.model_rpm.is_empty()
            || !self.model_tpm.is_empty()
            || self.max_budget.is_some()
            || !self.model_budgets.is_empty()
    }

    fn period(&self) -> Option<Duration> {
        self.budget_duration.as_deref().and_then(Duration::parse)
    }

    /// The budget of `model` (pico-dollars), if it has one of its own.
    pub fn model_budget(&self, model: &str) -> Option<Money> {
        self.model_budgets.get(model).map(|b| Money::from_pico(*b))
    }

    fn model_period(&self, model: &str) -> Option<Duration> {
        self.model_budget_periods.get(model).and_then(|p| Duration::parse(p))
    }
}

/// One admitted (or settled) request, kept while it counts in the window or is unsettled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub at: u64,
    pub model: String,
    /// The reserved estimate until settled, then the real total.
    pub tokens: u64,
    pub state: EntryState,
}

/// Read through [`EntryStateWire`]; written as derived: `{"state": "reserved", "cost": ..}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", try_from = "EntryStateWire")]
pub enum EntryState {
    /// Admitted and not yet settled: holds its worst-case cost (pico-dollars) against the
    /// budget, and a slot until `lease_until`.
    Reserved {
        cost: Money,
        lease_until: u64,
    },
    Settled,
    /// Its settlement never came: charged `charged` pico-dollars, as reserved.
    Estimated {
        charged: Money,
    },
    /// A late settlement replaced the estimate.
    Corrected,
}

impl Entry {
    fn reserved_cost(&self) -> Money {
        match self.state {
            EntryState::Reserved { cost, .. } => cost,
            _ => Money::ZERO,
        }
    }

    fn is_reserved(&self) -> bool {
        matches!(self.state, EntryState::Reserved { .. })
    }

    /// Kept after the window so that a late or repeated settlement is recognised.
    fn remembered(&self) -> bool {
        matches!(self.state, EntryState::Estimated { .. } | EntryState::Corrected)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    pub entries: Entries,
    /// Pico-dollars spent in the current budget period.
    pub spend: Money,
    pub period_start: Option<u64>,
    pub soft_alerted: bool,
    /// Blocked or deleted: refused here at once, whatever KV still says elsewhere.
    pub revoked: Option<String>,
    /// The key's current hash: an old secret is refused after regeneration.
    #[serde(alias = "token")]
    pub key_hash: Option<String>,
    /// The model groups the key may use, when it is restricted: a narrowing of `models` is
    /// enforced here at once, whatever KV still says elsewhere.
    #[serde(default)]
    pub scope: Option<Vec<String>>,
    /// Pico-dollars spent on each model with a budget of its own (`Limits::model_budgets`) in
    /// its current period, and when the periods began (of those that reset).
    #[serde(default)]
    pub model_spend: BTreeMap<String, u64>,
    #[serde(default)]
    pub model_period_start: BTreeMap<String, u64>,
    /// Ids of entries added or changed, and of entries dropped, since the ledger last saved:
    /// the object writes only those rows, whatever the size of the window.
    #[serde(skip)]
    pub changed: Vec<String>,
    #[serde(skip)]
    pub removed: Vec<String>,
}

fn one() -> u64 {
    1
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmitRequest {
    pub id: String,
    pub model: String,
    /// The caller's key hash, when the ledger is a key's.
    pub key_hash: Option<String>,
    /// A typical count of the prompt's tokens: what token rate limits admit on.
    pub prompt_tokens_estimate: u64,
    /// A sound upper bound of the prompt's tokens: what a budget holds.
    pub prompt_tokens_bound: u64,
    /// The most completion tokens each choice may use, if the request says.
    pub max_tokens: Option<u64>,
    /// Completions asked (`n`, `best_of`): each may use `max_tokens`.
    #[serde(default = "one")]
    pub choices: u64,
    /// The most completion tokens imposed when a budget needs a bound and none is asked.
    pub output_cap: u64,
    pub prices: Prices,
    pub lease_ms: u64,
    pub limits: Limits,
    /// The access groups `model` is in (from the config): a key's scope that names one of them
    /// admits the model, even when the config put it there after the scope was set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_groups: Vec<String>,
}

/// The `x-ratelimit-*` figures of an answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateInfo {
    pub limit_requests: Option<u64>,
    pub remaining_requests: Option<u64>,
    pub reset_requests_ms: Option<u64>,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub reset_tokens_ms: Option<u64>,
}

/// Read through [`DecisionWire`]; written as derived: `{"decision": "admitted", ..}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case", try_from = "DecisionWire")]
pub enum Decision {
    /// Go ahead; `max_tokens` is set when the budget requires imposing one.
    Admitted {
        max_tokens: Option<u64>,
        rate: RateInfo,
        spend: Money,
    },
    RateLimited {
        message: String,
        retry_after_ms: u64,
        rate: RateInfo,
    },
    BudgetExceeded {
        committed: Money,
        max_budget: Money,
    },
    Revoked {
        reason: String,
    },
    /// The key's `models` no longer include this model (changed since the caller read it).
    ModelNotAllowed {
        models: Vec<String>,
    },
    /// The key's budget for this model (`model_max_budget`) cannot hold the request.
    ModelBudgetExceeded {
        model: String,
        committed: Money,
        max_budget: Money,
    },
}

// The two enums above are internally tagged. serde's derived reader for such an enum buffers
// the whole object and reads each variant again from the buffer, which costs about 40 KB of
// wasm for these two; each is read instead as one flat object (the tag and every variant's
// fields, all optional) and checked. The same JSON is accepted; what is missing is an error.

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum EntryStateTag {
    Reserved,
    Settled,
    Estimated,
    Corrected,
}

#[derive(Deserialize)]
struct EntryStateWire {
    state: EntryStateTag,
    cost: Option<Money>,
    lease_until: Option<u64>,
    charged: Option<Money>,
}

impl TryFrom<EntryStateWire> for EntryState {
    type Error = &'static str;

    fn try_from(w: EntryStateWire) -> Result<Self, Self::Error> {
        Ok(match w.state {
            EntryStateTag::Reserved => EntryState::Reserved {
                cost: w.cost.ok_or("missing field `cost`")?,
                lease_until: w.lease_until.ok_or("missing field `lease_until`")?,
            },
            EntryStateTag::Settled => EntryState::Settled,
            EntryStateTag::Estimated => EntryState::Estimated { charged: w.charged.ok_or("missing field `charged`")? },
            EntryStateTag::Corrected => EntryState::Corrected,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum DecisionTag {
    Admitted,
    RateLimited,
    BudgetExceeded,
    Revoked,
    ModelNotAllowed,
    ModelBudgetExceeded,
}

#[derive(Deserialize)]
struct DecisionWire {
    decision: DecisionTag,
    max_tokens: Option<u64>,
    rate: Option<RateInfo>,
    spend: Option<Money>,
    message: Option<String>,
    retry_after_ms: Option<u64>,
    committed: Option<Money>,
    max_budget: Option<Money>,
    reason: Option<String>,
    models: Option<Vec<String>>,
    model: Option<String>,
}

impl TryFrom<DecisionWire> for Decision {
    type Error = &'static str;

    fn try_from(w: DecisionWire) -> Result<Self, Self::Error> {
        Ok(match w.decision {
            DecisionTag::Admitted => Decision::Admitted {
                max_tokens: w.max_tokens,
                rate: w.rate.ok_or("missing field `rate`")?,
                spend: w.spend.ok_or("missing field `spend`")?,
            },
            DecisionTag::RateLimited => Decision::RateLimited {
                message: w.message.ok_or("missing field `message`")?,
                retry_after_ms: w.retry_after_ms.ok_or("missing field `retry_after_ms`")?,
                rate: w.rate.ok_or("missing field `rate`")?,
            },
            DecisionTag::BudgetExceeded => Decision::BudgetExceeded {
                committed: w.committed.ok_or("missing field `committed`")?,
                max_budget: w.max_budget.ok_or("missing field `max_budget`")?,
            },
            DecisionTag::Revoked => Decision::Revoked { reason: w.reason.ok_or("missing field `reason`")? },
            DecisionTag::ModelNotAllowed => {
                Decision::ModelNotAllowed { models: w.models.ok_or("missing field `models`")? }
            }
            DecisionTag::ModelBudgetExceeded => Decision::ModelBudgetExceeded {
                model: w.model.ok_or("missing field `model`")?,
                committed: w.committed.ok_or("missing field `committed`")?,
                max_budget: w.max_budget.ok_or("missing field `max_budget`")?,
            },
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub id: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: Money,
    pub limits: Limits,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    pub spend: Money,
    /// This settlement took spend past `soft_budget` (reported once per period).
    pub soft_budget_crossed: bool,
    /// The settlement was a repeat and changed nothing.
    pub duplicate: bool,
}

impl LedgerState {
    /// Admits a request, or moves an admitted one to another model (a fallback): its own
    /// reservation is set aside while the new model's limits are checked, and kept if they
    /// refuse it.
    pub fn admit(&mut self, req: &AdmitRequest, now: u64) -> Decision {
        self.maintain(now, &req.limits);
        let previous = self.entries.find(&req.id, true).and_then(|seq| self.entries.take(seq));
        let decision = self.admit_new(req, now);
        if let (Some(previous), false) = (previous, matches!(decision, Decision::Admitted { .. })) {
            self.entries.push(previous);
        }
        decision
    }

    fn admit_new(&mut self, req: &AdmitRequest, now: u64) -> Decision {
        if let Some(reason) = &self.revoked {
            return Decision::Revoked { reason: reason.clone() };
        }
        if let (Some(current), Some(presented)) = (&self.key_hash, &req.key_hash) {
            if current != presented {
                return Decision::Revoked { reason: "regenerated".into() };
            }
        }
        if self
            .scope
            .as_ref()
            .is_some_and(|scope| !scope.contains(&req.model) && !req.access_groups.iter().any(|g| scope.contains(g)))
        {
            return Decision::ModelNotAllowed { models: self.scope.clone().unwrap_or_default() };
        }
        let limits = &req.limits;
        // The figures a refusal reports (nothing changes before one is returned).
        let rate = || self.rate_info(now, limits, &req.model, 0);

        if let Some(max) = limits.max_parallel {
            let (in_flight, first_end) = self
                .leases(now)
                .fold((0u64, None::<u64>), |(n, first), l| (n + 1, Some(first.map_or(l, |f| f.min(l)))));
            if in_flight >= max {
                let retry = first_end.map_or(1000, |l| l - now);
                let message = format!("Max parallel request limit reached: {max} requests in flight.");
                return Decision::RateLimited { message, retry_after_ms: retry, rate: rate() };
            }
        }
        let (all_models, this_model) = (None, Some(req.model.as_str()));
        if let Some(rpm) = limits.rpm {
            if let Some(retry) = self.requests_retry(now, rpm, all_models) {
                let message = format!("Rate limit reached: {rpm} requests per minute.");
                return Decision::RateLimited { message, retry_after_ms: retry, rate: rate() };
            }
        }
        if let Some(&rpm) = limits.model_rpm.get(&req.model) {
            if let Some(retry) = self.requests_retry(now, rpm, this_model) {
                let message = format!("Rate limit reached for model {}: {rpm} requests per minute.", req.model);
                return Decision::RateLimited { message, retry_after_ms: retry, rate: rate() };
            }
        }
        // Token limits admit on the estimate (settlement corrects it); every choice may use
        // the whole `max_tokens`.
        let choices = req.choices.max(1);
        let completion_estimate = req.max_tokens.unwrap_or(DEFAULT_COMPLETION_ESTIMATE).saturating_mul(choices);
        let tokens = req.prompt_tokens_estimate.saturating_add(completion_estimate);
        let token_limits = [(limits.tpm, None), (limits.model_tpm.get(&req.model).copied(), Some(&req.model))];
        for (tpm, model) in token_limits {
            let Some(tpm) = tpm else { continue };
            let retry = self.tokens_retry(now, tpm, tokens, model.map(String::as_str));
            if let Some(retry) = retry {
                let scope = model.map(|m| format!(" for model {m}")).unwrap_or_default();
                let message = if tokens > tpm {
                    format!("Rate limit reached{scope}: this request may use about {tokens} tokens, more than the limit of {tpm} tokens per minute.")
                } else {
                    format!("Rate limit reached{scope}: {tpm} tokens per minute.")
                };
                return Decision::RateLimited { message, retry_after_ms: retry, rate: rate() };
            }
        }

        // The budget holds what is spent plus the most that admitted requests may still cost:
        // the prompt's bound, and every choice's whole `max_tokens`.
        let committed = self.committed();
        let prompt_cost = req.prices.input.times(req.prompt_tokens_bound);
        // The model's own budget holds the same worst case against what its model committed.
        let model_budget = limits.model_budget(&req.model).map(|b| (b, self.model_committed(&req.model)));
        let key_room = limits.max_budget.map(|budget| budget.saturating_sub(committed));
        let model_room = model_budget.map(|(budget, used)| budget.saturating_sub(used));
        let over_model_budget = |committed: Money, max_budget: Money| Decision::ModelBudgetExceeded {
            model: req.model.clone(),
            committed,
            max_budget,
        };
        let mut imposed = None;
        let per_choice = match (req.max_tokens, key_room.into_iter().chain(model_room).min()) {
            (Some(m), _) => m,
            (None, Some(room)) if req.prices.output > Money::ZERO => {
                // What the tighter budget has left, shared among the choices.
                let left = room.saturating_sub(prompt_cost);
                let affordable = (left.tokens_at(req.prices.output) / choices).min(req.output_cap);
                if affordable == 0 {
                    // The tighter budget refuses (the key's on a tie).
                    return match (model_budget, key_room) {
                        (Some((budget, used)), Some(key_room)) if budget.saturating_sub(used) < key_room => {
                            over_model_budget(used, budget)
                        }
                        (Some((budget, used)), None) => over_model_budget(used, budget),
                        _ => Decision::BudgetExceeded { committed, max_budget: limits.max_budget.unwrap_or_default() },
                    };
                }
                imposed = Some(affordable);
                affordable
            }
            (None, _) => DEFAULT_COMPLETION_ESTIMATE,
        };
        let completion_cost = req.prices.output.times(per_choice.saturating_mul(choices));
        let worst = prompt_cost.saturating_add(completion_cost);
        if let Some(budget) = limits.max_budget {
            if committed > budget || committed.saturating_add(worst) > budget {
                return Decision::BudgetExceeded { committed, max_budget: budget };
            }
        }
        if let Some((budget, used)) = model_budget {
            if used > budget || used.saturating_add(worst) > budget {
                return over_model_budget(used, budget);
            }
        }

        self.entries.push(Entry {
            id: req.id.clone(),
            at: now,
            model: req.model.clone(),
            tokens,
            state: EntryState::Reserved { cost: worst, lease_until: now.saturating_add(req.lease_ms) },
        });
        self.changed.push(req.id.clone());
        Decision::Admitted { max_tokens: imposed, rate: self.rate_info(now, limits, &req.model, 0), spend: self.spend }
    }

    /// Replaces a reservation with the real usage (or records usage that had none).
    pub fn settle(&mut self, s: &Settlement, now: u64) -> Settled {
        self.maintain(now, &s.limits);
        let tokens = s.prompt_tokens.saturating_add(s.completion_tokens);
        let mut duplicate = false;
        match self.entries.find(&s.id, false).and_then(|seq| Some((seq, self.entries.get(seq)?))) {
            Some((seq, e)) => {
                match e.state {
                    EntryState::Reserved { .. } => {
                        self.spend = self.spend.saturating_add(s.cost);
                        if let Some(spent) = budgeted(&mut self.model_spend, &s.limits, &e.model) {
                            *spent = spent.saturating_add(s.cost.pico());
                        }
                        self.entries.update(seq, tokens, EntryState::Settled);
                        self.changed.push(s.id.clone());
                    }
                    EntryState::Estimated { charged } => {
                        self.spend = self.spend.saturating_sub(charged).saturating_add(s.cost);
                        // Corrected only in the model's period the request began in (its charge
                        // may fall in the next one: then it stands, never undercounting).
                        if self.model_period_start.get(&e.model).is_none_or(|start| *start <= e.at) {
                            if let Some(spent) = budgeted(&mut self.model_spend, &s.limits, &e.model) {
                                *spent = spent.saturating_sub(charged.pico()).saturating_add(s.cost.pico());
                            }
                        }
                        self.entries.update(seq, tokens, EntryState::Corrected);
                        self.changed.push(s.id.clone());
                    }
                    EntryState::Settled | EntryState::Corrected => duplicate = true,
                }
            }
            None => {
                // A request that was not admitted here (a key or party without limits, settled
                // in a batch). It is kept as settled for the window, where it counts against
                // window limits and a repeat (a batch retried after a lost answer) is
                // recognised instead of charged twice.
                self.entries.push(Entry {
                    id: s.id.clone(),
                    at: now,
                    model: String::new(),
                    tokens,
                    state: EntryState::Settled,
                });
                self.changed.push(s.id.clone());
                self.spend = self.spend.saturating_add(s.cost);
            }
        }
        let crossed = match s.limits.soft_budget {
            Some(soft) if !self.soft_alerted && self.spend >= soft => {
                self.soft_alerted = true;
                true
            }
            _ => false,
        };
        Settled { spend: self.spend, soft_budget_crossed: crossed, duplicate }
    }

    /// Removes a reservation as if it had never been admitted (another party refused the
    /// request): its slot, its tokens in the window and its budget hold go. Only a reservation
    /// is released; a settled request stays counted. True if there was one.
    pub fn release(&mut self, id: &str, now: u64, limits: &Limits) -> bool {
        self.maintain(now, limits);
        let Some(seq) = self.entries.find(id, true) else { return false };
        self.entries.take(seq);
        self.removed.push(id.to_string());
        true
    }

    /// When the current budget period ends, if the key has a `budget_duration`.
    pub fn budget_reset_at(&self, limits: &Limits) -> Option<u64> {
        Some(limits.period()?.after(self.period_start?))
    }

    /// Spend plus what unsettled requests may still cost.
    pub fn committed(&self) -> Money {
        self.entries.reserved().fold(self.spend, |sum, e| sum.saturating_add(e.reserved_cost()))
    }

    /// The spend on `model` in its budget's period plus what its unsettled requests may cost.
    pub fn model_committed(&self, model: &str) -> Money {
        let spend = Money::from_pico(self.model_spend.get(model).copied().unwrap_or(0));
        self.entries.reserved().filter(|e| e.model == model).fold(spend, |sum, e| sum.saturating_add(e.reserved_cost()))
    }

    /// Periodic work done lazily on each call: budget periods roll over, expired reservations
    /// are charged, and what no longer counts is dropped.
    pub fn maintain(&mut self, now: u64, limits: &Limits) {
        if let Some(period) = limits.period() {
            let start = *self.period_start.get_or_insert(now);
            let next_start = current_period_start(period, start, now);
            if next_start != start {
                self.period_start = Some(next_start);
                self.spend = Money::ZERO;
                self.soft_alerted = false;
                // Estimates charged to the old period are not corrected in the new one.
                for seq in self.entries.estimated_seqs() {
                    let Some(e) = self.entries.get(seq) else { continue };
                    self.changed.push(e.id.clone());
                    self.entries.update(seq, e.tokens, EntryState::Corrected);
                }
            }
        }
        for model in limits.model_budgets.keys() {
            let Some(period) = limits.model_period(model) else { continue };
            let start = match self.model_period_start.get(model) {
                Some(start) => *start,
                None => {
                    self.model_period_start.insert(model.clone(), now);
                    now
                }
            };
            let next_start = current_period_start(period, start, now);
            if next_start != start {
                self.model_period_start.insert(model.clone(), next_start);
                self.model_spend.remove(model);
            }
        }
        for seq in self.entries.reserved_since(now.saturating_sub(RESERVATION_MAX_MS)) {
            let Some(e) = self.entries.get(seq) else { continue };
            if let EntryState::Reserved { cost, .. } = e.state {
                if e.at + RESERVATION_MAX_MS <= now {
                    self.spend = self.spend.saturating_add(cost);
                    self.changed.push(e.id.clone());
                    if let Some(spent) = budgeted(&mut self.model_spend, limits, &e.model) {
                        *spent = spent.saturating_add(cost.pico());
                    }
                    self.entries.update(seq, e.tokens, EntryState::Estimated { charged: cost });
                }
            }
        }
        // Every entry stays for the window: window limits count it, and a repeated settlement
        // of it is recognised.
        self.entries.prune(now, &mut self.removed);
    }

    /// The lease ends of the requests in flight.
    fn leases(&self, now: u64) -> impl Iterator<Item = u64> + '_ {
        self.entries.reserved().filter_map(move |e| match e.state {
            EntryState::Reserved { lease_until, .. } if lease_until > now => Some(lease_until),
            _ => None,
        })
    }

    /// `None` if one more request (of `model`, or of any) fits under `rpm`; else how long
    /// until it would.
    fn requests_retry(&self, now: u64, rpm: u64, model: Option<&str>) -> Option<u64> {
        // Counted first: the times are gathered and sorted only when the limit is reached.
        let count = self.entries.totals(now, model).requests;
        if count < rpm {
            return None;
        }
        // (time, tokens) pairs: sorted by the same code as `tokens_retry`'s (one sort in the wasm).
        let mut times = self.entries.window_times(now, model);
        times.sort_unstable();
        // The oldest (count - rpm + 1) admissions must leave the window first.
        let last_to_leave = times.get((count - rpm) as usize).map_or(now, |t| t.0);
        Some((last_to_leave + WINDOW_MS).saturating_sub(now).max(1))
    }

    /// `None` if `tokens` more (of `model`, or of any) fit under `tpm`; else how long until
    /// they would.
    fn tokens_retry(&self, now: u64, tpm: u64, tokens: u64, model: Option<&str>) -> Option<u64> {
        // Summed first: the window is gathered and sorted only when the tokens do not fit.
        let mut used = self.entries.totals(now, model).tokens;
        if used.saturating_add(tokens) <= tpm {
            return None;
        }
        if tokens > tpm {
            return Some(WINDOW_MS);
        }
        let mut window = self.entries.window_times(now, model);
        window.sort_unstable();
        for (at, t) in window {
            used = used.saturating_sub(t);
            if used.saturating_add(tokens) <= tpm {
                return Some((at + WINDOW_MS).saturating_sub(now).max(1));
            }
        }
        Some(WINDOW_MS)
    }

    /// The `x-ratelimit-*` figures after `extra` more requests.
    pub fn rate_info(&self, now: u64, limits: &Limits, model: &str, extra: u64) -> RateInfo {
        let rpm = limits.rpm.or_else(|| limits.model_rpm.get(model).copied());
        let tpm = limits.tpm.or_else(|| limits.model_tpm.get(model).copied());
        // The requests (and the oldest of them) and the tokens in the window, each counted
        // across models when the key-wide limit is set, else for this model.
        let requests_of = limits.rpm.is_none().then_some(model);
        let tokens_of = limits.tpm.is_none().then_some(model);
        let counted = self.entries.totals(now, requests_of);
        let (requests, oldest) = (counted.requests, counted.oldest);
        let used_tokens =
            if tokens_of == requests_of { counted.tokens } else { self.entries.totals(now, tokens_of).tokens };
        let reset = oldest.map(|at| (at + WINDOW_MS).saturating_sub(now)).unwrap_or(0);
        RateInfo {
            limit_requests: rpm,
            remaining_requests: rpm.map(|r| r.saturating_sub(requests + extra)),
            reset_requests_ms: rpm.map(|_| reset),
            limit_tokens: tpm,
            remaining_tokens: tpm.map(|t| t.saturating_sub(used_tokens)),
            reset_tokens_ms: tpm.map(|_| reset),
        }
    }
}

/// The start of the period that holds `now`, for a period that began at `start`: whole periods
/// are skipped (bounded: at most 1200 months, or one jump for seconds).
fn current_period_start(period: Duration, start: u64, now: u64) -> u64 {
    let mut next_start = start;
    match period {
        Duration::Seconds(s) if s > 0 && now >= start.saturating_add(s.saturating_mul(1000)) => {
            let ms = s.saturating_mul(1000);
            next_start = start + (now - start) / ms * ms;
        }
        Duration::Months(_) => {
            for _ in 0..1200 {
                let candidate = period.after(next_start);
                if candidate > now {
                    break;
                }
                next_start = candidate;
            }
        }
        Duration::Seconds(_) => {}
    }
    next_start
}

/// The spend (pico-dollars) on `model` when `limits` give it a budget of its own.
fn budgeted<'a>(spend: &'a mut BTreeMap<String, u64>, limits: &Limits, model: &str) -> Option<&'a mut u64> {
    if limits.model_budgets.contains_key(model) {
        Some(spend.entry(model.to_string()).or_default())
    } else {
        None
    }
}

/// When the period of `model`'s budget ends: `None` when it never resets, or none began yet.
pub fn model_period_end(limits: &Limits, period_starts: &BTreeMap<String, u64>, model: &str) -> Option<u64> {
    Some(limits.model_period(model)?.after(*period_starts.get(model)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::PriceSource;

    const T0: u64 = 1_800_000_000_000;
    const PRICES: Prices = Prices {
        input: Money::from_pico(1_000_000),
        output: Money::from_pico(2_000_000),
        cache_read: Money::from_pico(1_000_000),
        cache_creation: Money::from_pico(1_000_000),
        source: PriceSource::Config,
    }; // 1 and 2 µ$ per token

    /// The random traces' generator (xorshift64: seeded, no dependency).
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn limits() -> Limits {
        Limits::default()
    }

    fn request(id: &str, limits: &Limits) -> AdmitRequest {
        AdmitRequest {
            id: id.into(),
            model: "m".into(),
            key_hash: None,
            prompt_tokens_estimate: 10,
            prompt_tokens_bound: 10,
            max_tokens: Some(20),
            choices: 1,
            output_cap: 1000,
            prices: PRICES,
            lease_ms: 30_000,
            limits: limits.clone(),
            access_groups: Vec::new(),
        }
    }

    fn admitted(d: &Decision) -> bool {
        matches!(d, Decision::Admitted { .. })
    }

    fn settle(state: &mut LedgerState, id: &str, prompt: u64, completion: u64, limits: &Limits, now: u64) -> Settled {
        let cost = PRICES.tokens_cost(prompt, completion);
        let s = Settlement {
            id: id.into(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            cost,
            limits: limits.clone(),
        };
        state.settle(&s, now)
    }

    /// A long random trace of admissions, fallbacks, settlements (repeated, late, unknown) and
    /// rate queries under changing limits: every decision, answer and state along it, digested.
    /// The digest pins the rules' exact behaviour, so that a change meant only to make them
    /// faster cannot change a single outcome.
    #[test]
    fn a_random_trace_keeps_its_outcomes() {
        let presets = [
            Limits { rpm: Some(5), ..limits() },
            Limits { tpm: Some(400), max_parallel: Some(3), ..limits() },
            Limits {
                model_rpm: [("m".to_string(), 3)].into(),
                model_tpm: [("n".to_string(), 300)].into(),
                max_budget: Some(Money::from_pico(400_000_000)),
                soft_budget: Some(Money::from_pico(100_000_000)),
                budget_duration: Some("1m".into()),
                ..limits()
            },
            Limits {
                max_budget: Some(Money::from_pico(250_000_000)),
                budget_duration: Some("30s".into()),
                max_parallel: Some(2),
                ..limits()
            },
            Limits { rpm: Some(8), tpm: Some(1_000), max_budget: Some(Money::from_pico(10_000_000_000)), ..limits() },
            limits(),
        ];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut state = LedgerState::default();
        let mut now = T0;
        let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
        let mut absorb = |text: String| {
            for b in text.bytes() {
                digest = (digest ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        let mut limits = presets[0].clone();
        for step in 0..4_000u64 {
            now += rng.below(4_000);
            if rng.below(50) == 0 {
                now += rng.below(4_000_000);
            }
            if step % 300 == 0 {
                limits = presets[(step / 300) as usize % presets.len()].clone();
            }
            let id = format!("call-{}", rng.below(60));
            let model = if rng.below(3) == 0 { "n" } else { "m" };
            match rng.below(10) {
                0..=4 => {
                    let mut r = request(&id, &limits);
                    r.model = model.into();
                    r.max_tokens = [None, Some(5), Some(50), Some(400)][rng.below(4) as usize];
                    r.choices = 1 + rng.below(3);
                    r.prompt_tokens_estimate = rng.below(200);
                    r.prompt_tokens_bound = r.prompt_tokens_estimate * 2;
                    r.output_cap = 1 + rng.below(300);
                    let decision = state.admit(&r, now);
                    absorb(format!("{decision:?}"));
                }
                5..=8 => {
                    let (prompt, completion) = (rng.below(200), rng.below(200));
                    let s = Settlement {
                        id,
                        prompt_tokens: prompt,
                        completion_tokens: completion,
                        cost: PRICES.tokens_cost(prompt, completion),
                        limits: limits.clone(),
                    };
                    let settled = state.settle(&s, now);
                    absorb(format!("{settled:?}"));
                }
                _ => {
                    absorb(format!("{:?}", state.rate_info(now, &limits, model, rng.below(3))));
                    absorb(format!("{:?}", state.budget_reset_at(&limits)));
                }
            }
            absorb(format!(
                "{:?} {} {:?} {}",
                state.entries,
                state.spend.pico(),
                state.period_start,
                state.soft_alerted
            ));
            absorb(format!("{:?} {:?}", state.changed, state.removed));
            state.changed.clear();
            state.removed.clear();
        }
        // Admitted 447, rate limited 960, over budget 627; 1,555 settlements, 777 of them
        // repeats. (Changed when settlements of requests not admitted here began to be kept
        // for the window without window limits too, so that their repeats count once.)
        assert_eq!(digest, 12_135_956_885_490_495_567);
    }

    /// The entries' indexes and running sums (by id, reservations, estimates, the window's
    /// counts and tokens per model) stay equal to a count of the list itself along random
    /// traces of admissions, fallbacks, settlements, releases and maintenance, the clock
    /// sometimes going back.
    #[test]
    fn the_window_sums_equal_a_recount() {
        let presets = [
            limits(),
            Limits { rpm: Some(6), tpm: Some(500), ..limits() },
            Limits { max_parallel: Some(4), model_tpm: [("n".to_string(), 300)].into(), ..limits() },
            Limits {
                max_budget: Some(Money::from_pico(2_000_000_000)),
                budget_duration: Some("2m".into()),
                ..model_budgets(&[("m", 500, Some("90s"))])
            },
        ];
        for seed in [1u64, 0x9e37_79b9_7f4a_7c15, 0xdead_beef] {
            let mut rng = Rng(seed);
            let mut state = LedgerState::default();
            let mut now = T0;
            for step in 0..2_000u64 {
                let limits = &presets[(step / 200) as usize % presets.len()];
                match rng.below(100) {
                    0 => now = now.saturating_sub(rng.below(90_000)),
                    1..=3 => now += RESERVATION_MAX_MS / 2 + rng.below(RESERVATION_MAX_MS),
                    4 => now += ESTIMATE_MEMORY_MS / 3,
                    _ => now += rng.below(3_000),
                }
                let id = format!("c{}", rng.below(80));
                let model = ["m", "n", "o"][rng.below(3) as usize];
                match rng.below(10) {
                    0..=3 => {
                        let mut r = request(&id, limits);
                        r.model = model.into();
                        r.prompt_tokens_estimate = rng.below(100);
                        state.admit(&r, now);
                    }
                    4..=7 => {
                        settle(&mut state, &id, rng.below(50), rng.below(50), limits, now);
                    }
                    8 => {
                        state.release(&id, now, limits);
                    }
                    _ => state.maintain(now, limits),
                }
                state.entries.check(now);
                let reserved: Money =
                    state.entries.iter().fold(state.spend, |sum, e| sum.saturating_add(e.reserved_cost()));
                assert_eq!(state.committed(), reserved, "committed at step {step}");
                for model in ["m", "n", "o"] {
                    let held = state
                        .entries
                        .iter()
                        .filter(|e| e.model == model)
                        .fold(Money::ZERO, |sum, e| sum.saturating_add(e.reserved_cost()));
                    let spent = Money::from_pico(state.model_spend.get(model).copied().unwrap_or(0));
                    assert_eq!(state.model_committed(model), spent.saturating_add(held), "{model} at step {step}");
                }
            }
        }
    }

    #[test]
    fn holes_behind_an_estimate_kept_a_day_are_closed() {
        let l = Limits { rpm: Some(10_000), ..limits() };
        let mut s = LedgerState::default();
        assert!(admitted(&s.admit(&request("abandoned", &l), T0)));
        let mut now = T0 + RESERVATION_MAX_MS;
        s.maintain(now, &l);
        for i in 0..5_000 {
            now += 100;
            settle(&mut s, &format!("u{i}"), 1, 1, &l, now);
            assert!(s.entries.slots() <= 2 * s.entries.len() + 64, "{} slots", s.entries.slots());
            if i % 500 == 0 {
                s.entries.check(now);
            }
        }
        s.entries.check(now);
        assert_eq!(s.entries.len(), 1 + 600, "the estimate and a minute of settlements");
        assert_eq!(s.entries.iter().next().map(|e| e.id.as_str()), Some("abandoned"));
        assert!(settle(&mut s, "u4999", 1, 1, &l, now).duplicate);
        assert!(!settle(&mut s, "abandoned", 1, 1, &l, now).duplicate, "the late settlement corrects the estimate");
        assert_eq!(s.rate_info(now, &l, "m", 0).remaining_requests, Some(10_000 - 600));
    }

    #[test]
    fn rpm_admits_exactly_n_in_any_minute() {
        let l = Limits { rpm: Some(5), ..limits() };
        let mut s = LedgerState::default();
        let results: Vec<bool> = (0..15).map(|i| admitted(&s.admit(&request(&format!("r{i}"), &l), T0 + i))).collect();
        assert_eq!(results.iter().filter(|a| **a).count(), 5);
        assert!(results[..5].iter().all(|a| *a));
        // Still full just before the first admission leaves the window, open right after.
        let Decision::RateLimited { retry_after_ms, .. } = s.admit(&request("x", &l), T0 + 59_000) else { panic!() };
        assert_eq!(retry_after_ms, 1_000);
        assert!(admitted(&s.admit(&request("y", &l), T0 + 60_000)));
        // No boundary doubling: at most 5 in any 60 s.
        assert!(!admitted(&s.admit(&request("z", &l), T0 + 60_000)));
        assert!(admitted(&s.admit(&request("z", &l), T0 + 60_001)));
    }

    #[test]
    fn model_rpm_counts_only_that_model() {
        let l = Limits { model_rpm: [("m".to_string(), 1)].into(), ..limits() };
        let mut s = LedgerState::default();
        assert!(admitted(&s.admit(&request("a", &l), T0)));
        assert!(!admitted(&s.admit(&request("b", &l), T0)));
        let mut other = request("c", &l);
        other.model = "n".into();
        assert!(admitted(&s.admit(&other, T0)));
    }

    #[test]
    fn parallel_slots_are_released_by_settlement_or_by_lease() {
        let l = Limits { max_parallel: Some(2), ..limits() };
        let mut s = LedgerState::default();
        assert!(admitted(&s.admit(&request("a", &l), T0)));
        assert!(admitted(&s.admit(&request("b", &l), T0)));
        let Decision::RateLimited { retry_after_ms, message, .. } = s.admit(&request("c", &l), T0 + 1) else {
            panic!()
        };
        assert!(message.contains("parallel"));
        assert_eq!(retry_after_ms, 29_999);
        settle(&mut s, "a", 1, 1, &l, T0 + 2);
        assert!(admitted(&s.admit(&request("d", &l), T0 + 3)));
        // "b" never settles (its isolate died): its lease frees the slot.
        assert!(!admitted(&s.admit(&request("e", &l), T0 + 4)));
        assert!(admitted(&s.admit(&request("f", &l), T0 + 30_001)));
    }

    #[test]
    fn tpm_reserves_then_settles_the_real_tokens() {
        let l = Limits { tpm: Some(100), ..limits() };
        let mut s = LedgerState::default();
        // Each request reserves 10 + 20 = 30 tokens: three fit, the fourth does not.
        for id in ["a", "b", "c"] {
            assert!(admitted(&s.admit(&request(id, &l), T0)));
        }
        assert!(!admitted(&s.admit(&request("d", &l), T0)));
        // Real usage is smaller: settling frees room.
        settle(&mut s, "a", 5, 5, &l, T0 + 1);
        assert!(admitted(&s.admit(&request("d", &l), T0 + 2)));
        // A request larger than the whole limit is refused with the reason.
        let mut huge = request("h", &l);
        huge.max_tokens = Some(500);
        let Decision::RateLimited { message, .. } = s.admit(&huge, T0 + 3) else { panic!() };
        assert!(message.contains("more than the limit"));
    }

    #[test]
    fn budget_is_never_overshot_by_racing_requests() {
        // Worst case per request: 10 × 1 µ$ + 20 × 2 µ$ = 50 µ$; budget 1000 µ$ → 20 fit.
        let l = Limits { max_budget: Some(Money::from_pico(1_000_000_000)), ..limits() };
        let mut s = LedgerState::default();
        let admitted_ids: Vec<String> =
            (0..100).map(|i| format!("r{i}")).filter(|id| admitted(&s.admit(&request(id, &l), T0))).collect();
        assert_eq!(admitted_ids.len(), 20);
        let Decision::BudgetExceeded { committed, max_budget } = s.admit(&request("x", &l), T0) else { panic!() };
        assert_eq!((committed, max_budget), (Money::from_pico(1_000_000_000), Money::from_pico(1_000_000_000)));
        // Every admitted request settles at its worst case: spend lands exactly on the budget.
        for id in &admitted_ids {
            settle(&mut s, id, 10, 20, &l, T0 + 1);
        }
        assert_eq!(s.spend, Money::from_pico(1_000_000_000));
        assert_eq!(s.committed(), s.spend);
    }

    #[test]
    fn without_max_tokens_the_budget_imposes_one() {
        let l = Limits { max_budget: Some(Money::from_pico(100_000_000)), ..limits() }; // 100 µ$
        let mut s = LedgerState::default();
        let mut r = request("a", &l);
        r.max_tokens = None;
        // (100 - 10) µ$ left after the prompt, 2 µ$ per completion token → 45 tokens.
        let Decision::Admitted { max_tokens, .. } = s.admit(&r, T0) else { panic!() };
        assert_eq!(max_tokens, Some(45));
        r.id = "b".into();
        assert!(matches!(s.admit(&r, T0), Decision::BudgetExceeded { .. }));
        // The cap applies when the budget would allow more.
        let roomy = Limits { max_budget: Some(Money::from_pico(u64::MAX / 4)), ..limits() };
        let mut r = request("c", &roomy);
        r.max_tokens = None;
        let Decision::Admitted { max_tokens, .. } = LedgerState::default().admit(&r, T0) else { panic!() };
        assert_eq!(max_tokens, Some(1000));
    }

    #[test]
    fn settlement_is_idempotent_and_records_unadmitted_usage() {
        let l = Limits { rpm: Some(100), ..limits() };
        let mut s = LedgerState::default();
        let first = settle(&mut s, "a", 3, 4, &l, T0);
        assert_eq!(first.spend, Money::from_pico(3_000_000 + 8_000_000));
        let again = settle(&mut s, "a", 3, 4, &l, T0 + 5);
        assert!(again.duplicate);
        assert_eq!(again.spend, first.spend);
    }

    #[test]
    fn settled_requests_are_kept_for_the_window_only() {
        let l = Limits { max_budget: Some(Money::from_pico(u64::MAX / 4)), ..limits() };
        let mut s = LedgerState::default();
        for i in 0..50 {
            let id = format!("r{i}");
            assert!(admitted(&s.admit(&request(&id, &l), T0 + i)));
            settle(&mut s, &id, 1, 1, &l, T0 + i);
        }
        settle(&mut s, "unadmitted", 1, 1, &limits(), T0 + 60);
        s.maintain(T0 + 61, &l);
        assert_eq!(s.entries.len(), 51, "kept while a repeat may come");
        s.maintain(T0 + 60 + WINDOW_MS, &l);
        assert!(s.entries.is_empty(), "{} entries kept", s.entries.len());
        assert_eq!(s.spend, Money::from_pico(51 * 3_000_000));
    }

    #[test]
    fn a_batch_settlement_repeated_without_limits_counts_once() {
        // A key or party without limits settles in batches; a batch retried after its answer
        // was lost carries the same ids again.
        let mut s = LedgerState::default();
        let first = settle(&mut s, "batched", 3, 4, &limits(), T0);
        let again = settle(&mut s, "batched", 3, 4, &limits(), T0 + 1_300);
        assert!(again.duplicate);
        assert_eq!(again.spend, first.spend);
        assert_eq!(s.spend, Money::from_pico(3_000_000 + 8_000_000));
    }

    #[test]
    fn changes_name_exactly_the_rows_to_write() {
        let l = Limits { rpm: Some(10), ..limits() };
        let mut s = LedgerState::default();
        s.admit(&request("a", &l), T0);
        s.admit(&request("b", &l), T0);
        assert_eq!(s.changed, ["a", "b"]);
        s.changed.clear();
        settle(&mut s, "a", 1, 1, &l, T0 + 1);
        assert_eq!(s.changed, ["a"]);
        assert!(s.removed.is_empty());
        s.changed.clear();
        s.maintain(T0 + WINDOW_MS + 1, &l);
        assert_eq!(s.removed, ["a"], "the settled one leaves the window; the reserved one stays");
    }

    #[test]
    fn an_abandoned_reservation_is_charged_then_corrected_by_a_late_settlement() {
        let l = Limits { max_budget: Some(Money::from_pico(1_000_000_000)), ..limits() };
        let mut s = LedgerState::default();
        assert!(admitted(&s.admit(&request("a", &l), T0)));
        s.maintain(T0 + RESERVATION_MAX_MS, &l);
        assert_eq!(s.spend, Money::from_pico(50_000_000));
        let late = settle(&mut s, "a", 1, 1, &l, T0 + RESERVATION_MAX_MS + 1);
        assert_eq!(late.spend, Money::from_pico(3_000_000));
        assert!(!late.duplicate);
        assert!(settle(&mut s, "a", 1, 1, &l, T0 + RESERVATION_MAX_MS + 2).duplicate);
    }

    #[test]
    fn budget_periods_reset_spend() {
        let l =
            Limits { budget_duration: Some("30s".into()), soft_budget: Some(Money::from_pico(6_000_000)), ..limits() };
        let mut s = LedgerState::default();
        let first = settle(&mut s, "a", 3, 1, &l, T0);
        assert!(!first.soft_budget_crossed);
        assert!(settle(&mut s, "b", 3, 1, &l, T0 + 1).soft_budget_crossed);
        assert!(!settle(&mut s, "c", 3, 1, &l, T0 + 2).soft_budget_crossed, "once per period");
        assert_eq!(s.budget_reset_at(&l), Some(T0 + 30_000));
        s.maintain(T0 + 29_999, &l);
        assert_eq!(s.spend, Money::from_pico(15_000_000));
        s.maintain(T0 + 95_000, &l);
        assert_eq!(s.spend, Money::from_pico(0));
        assert_eq!(s.period_start, Some(T0 + 90_000));
        assert!(settle(&mut s, "d", 6, 0, &l, T0 + 95_001).soft_budget_crossed, "again in the new period");
    }

    #[test]
    fn revoked_and_regenerated_keys_are_refused() {
        let l = Limits { rpm: Some(10), ..limits() };
        let mut s = LedgerState { key_hash: Some("new".into()), ..Default::default() };
        let mut r = request("a", &l);
        r.key_hash = Some("old".into());
        assert_eq!(s.admit(&r, T0), Decision::Revoked { reason: "regenerated".into() });
        r.key_hash = Some("new".into());
        assert!(admitted(&s.admit(&r, T0)));
        s.revoked = Some("blocked".into());
        r.id = "b".into();
        assert_eq!(s.admit(&r, T0), Decision::Revoked { reason: "blocked".into() });
    }

    #[test]
    fn rate_info_counts_down() {
        let l = Limits { rpm: Some(3), tpm: Some(100), ..limits() };
        let mut s = LedgerState::default();
        let Decision::Admitted { rate, .. } = s.admit(&request("a", &l), T0) else { panic!() };
        assert_eq!(rate.limit_requests, Some(3));
        assert_eq!(rate.remaining_requests, Some(2));
        assert_eq!(rate.remaining_tokens, Some(70));
        assert_eq!(rate.reset_requests_ms, Some(60_000));
    }

    #[test]
    fn token_limits_admit_on_the_estimate_and_budgets_hold_the_bound() {
        // A tpm of 30: "Hello!" estimated at 8 prompt tokens, max_tokens 5 → 13 fit twice.
        let l = Limits { tpm: Some(30), ..limits() };
        let mut s = LedgerState::default();
        let mut r = request("a", &l);
        (r.prompt_tokens_estimate, r.prompt_tokens_bound, r.max_tokens) = (8, 31, Some(5));
        assert!(admitted(&s.admit(&r, T0)));
        settle(&mut s, "a", 4, 5, &l, T0 + 1);
        r.id = "b".into();
        assert!(admitted(&s.admit(&r, T0 + 2)), "9 used + 13 asked fit in 30");
        // The budget holds the bound: 31 × 1 µ$ + 5 × 2 µ$ = 41 µ$.
        let b = Limits { max_budget: Some(Money::from_pico(41_000_000)), ..limits() };
        let mut s = LedgerState::default();
        let mut r = request("c", &b);
        (r.prompt_tokens_estimate, r.prompt_tokens_bound, r.max_tokens) = (8, 31, Some(5));
        assert!(admitted(&s.admit(&r, T0)));
        r.id = "d".into();
        assert!(matches!(s.admit(&r, T0), Decision::BudgetExceeded { .. }));
    }

    #[test]
    fn n_multiplies_the_output_hold_and_shares_an_imposed_max_tokens() {
        let l = Limits { max_budget: Some(Money::from_pico(100_000_000)), ..limits() }; // 100 µ$
        let mut r = request("a", &l);
        r.choices = 3;
        // 10 µ$ of prompt + 3 × 20 × 2 µ$ = 130 µ$: too much for 100.
        assert!(matches!(LedgerState::default().admit(&r, T0), Decision::BudgetExceeded { .. }));
        r.max_tokens = None;
        // (100 - 10) µ$ left, 2 µ$ a token, 3 choices → 15 tokens each.
        let Decision::Admitted { max_tokens, .. } = LedgerState::default().admit(&r, T0) else { panic!() };
        assert_eq!(max_tokens, Some(15));
        // Token limits count every choice too.
        let t = Limits { tpm: Some(60), ..limits() };
        let mut r = request("b", &t);
        r.choices = 3;
        assert!(!admitted(&LedgerState::default().admit(&r, T0)), "10 + 3 × 20 > 60");
    }

    #[test]
    fn no_arithmetic_escapes_a_limit() {
        let mut huge = request("h", &Limits { tpm: Some(1_000), ..limits() });
        huge.max_tokens = Some(u64::MAX);
        assert!(!admitted(&LedgerState::default().admit(&huge, T0)));
        huge.choices = u64::MAX;
        huge.prompt_tokens_estimate = u64::MAX;
        assert!(!admitted(&LedgerState::default().admit(&huge, T0)));
        let budget = Limits { max_budget: Some(Money::from_pico(1_000_000_000_000)), ..limits() };
        let mut huge = request("b", &budget);
        huge.max_tokens = Some(u64::MAX);
        assert!(matches!(LedgerState::default().admit(&huge, T0), Decision::BudgetExceeded { .. }));
        huge.max_tokens = Some(u64::MAX / 2_000_000 + 1); // wraps if multiplied unchecked
        assert!(matches!(LedgerState::default().admit(&huge, T0), Decision::BudgetExceeded { .. }));
        // A usage that overflows when added is recorded as the most, not wrapped.
        let w = Limits { tpm: Some(100), ..limits() };
        let mut s = LedgerState::default();
        assert!(admitted(&s.admit(&request("x", &w), T0)));
        let settlement = Settlement {
            id: "x".into(),
            prompt_tokens: u64::MAX,
            completion_tokens: 5,
            cost: Money::MAX,
            limits: w.clone(),
        };
        s.settle(&settlement, T0 + 1);
        assert!(!admitted(&s.admit(&request("y", &w), T0 + 2)));
    }

    #[test]
    fn every_budget_is_spendable_to_within_one_request_bound() {
        // max_budget 0.1 USD at 0.001 / 0.002 USD a token; "Hello!" bound at 31 prompt tokens,
        // max_tokens 10, really using 4 + 5 tokens (0.014 USD).
        let l = Limits { max_budget: Some(Money::from_pico(100_000_000_000)), ..limits() };
        let prices = Prices {
            input: Money::from_pico(1_000_000_000),
            output: Money::from_pico(2_000_000_000),
            cache_read: Money::from_pico(1_000_000_000),
            cache_creation: Money::from_pico(1_000_000_000),
            source: PriceSource::Config,
        };
        let hello = |id: &str| AdmitRequest {
            prices,
            prompt_tokens_estimate: 8,
            prompt_tokens_bound: 31,
            max_tokens: Some(10),
            ..request(id, &l)
        };
        let bound_cost = 31 * 1_000_000_000 + 10 * 2_000_000_000;
        let mut s = LedgerState::default();
        // 40 racing: admitted while the holds fit, none past the budget.
        let racing: Vec<String> =
            (0..40).map(|i| format!("r{i}")).filter(|id| admitted(&s.admit(&hello(id), T0))).collect();
        assert_eq!(racing.len(), 1, "0.051 held; a second would pass 0.1");
        for id in &racing {
            let cost = prices.tokens_cost(4, 5);
            s.settle(
                &Settlement { id: id.clone(), prompt_tokens: 4, completion_tokens: 5, cost, limits: l.clone() },
                T0 + 1,
            );
        }
        // Then one at a time until refused.
        let mut n = 0;
        while admitted(&s.admit(&hello(&format!("s{n}")), T0 + 2)) {
            let cost = prices.tokens_cost(4, 5);
            let id = format!("s{n}");
            s.settle(&Settlement { id, prompt_tokens: 4, completion_tokens: 5, cost, limits: l.clone() }, T0 + 2);
            n += 1;
        }
        assert!(s.spend <= Money::from_pico(100_000_000_000));
        assert!(
            s.spend.pico() + bound_cost >= 100_000_000_000,
            "{} left unspendable",
            100_000_000_000 - s.spend.pico()
        );
    }

    #[test]
    fn a_fallback_moves_the_reservation_under_the_new_models_limits() {
        let l = Limits {
            model_rpm: [("backup".to_string(), 1)].into(),
            max_budget: Some(Money::from_pico(1_000_000_000)),
            ..limits()
        };
        let mut s = LedgerState::default();
        assert!(admitted(&s.admit(&request("a", &l), T0)));
        let mut moved = request("a", &l);
        moved.model = "backup".into();
        assert!(admitted(&s.admit(&moved, T0 + 1)));
        assert_eq!(s.entries.len(), 1, "moved, not added");
        assert_eq!(s.committed(), Money::from_pico(50_000_000), "held once");
        // Another request's fallback finds backup's limit used: refused, and keeps its hold.
        assert!(admitted(&s.admit(&request("b", &l), T0 + 2)));
        let mut moved = request("b", &l);
        moved.model = "backup".into();
        assert!(matches!(s.admit(&moved, T0 + 3), Decision::RateLimited { .. }));
        assert_eq!(s.entries.iter().find(|e| e.id == "b").map(|e| e.model.as_str()), Some("m"));
        assert_eq!(s.committed(), Money::from_pico(100_000_000));
    }

    #[test]
    fn a_released_reservation_leaves_no_trace() {
        let l = Limits {
            rpm: Some(2),
            tpm: Some(100),
            max_parallel: Some(1),
            max_budget: Some(Money::from_pico(120_000_000)),
            ..limits()
        };
        let mut s = LedgerState::default();
        assert!(admitted(&s.admit(&request("a", &l), T0)));
        assert!(!admitted(&s.admit(&request("b", &l), T0)), "the slot is held");
        s.changed.clear();
        assert!(s.release("a", T0 + 1, &l));
        assert_eq!(s.removed, ["a"]);
        assert!(s.entries.is_empty());
        assert_eq!((s.committed(), s.spend), (Money::ZERO, Money::ZERO));
        // rpm 2: two more fit in the same minute, as if "a" had never come.
        assert!(admitted(&s.admit(&request("b", &l), T0 + 2)));
        settle(&mut s, "b", 10, 20, &l, T0 + 3);
        assert!(admitted(&s.admit(&request("c", &l), T0 + 4)));
        assert_eq!(s.rate_info(T0 + 5, &l, "m", 0).remaining_requests, Some(0));
        // A settled request is not released, nor is one never seen; a repeat does nothing.
        assert!(!s.release("b", T0 + 6, &l));
        assert!(!s.release("zz", T0 + 6, &l));
        assert!(s.release("c", T0 + 6, &l));
        assert!(!s.release("c", T0 + 7, &l));
        assert_eq!(s.spend, Money::from_pico(50_000_000));
        // A settlement after a release records the usage once (no hold to replace).
        let late = settle(&mut s, "c", 1, 1, &l, T0 + 8);
        assert_eq!(late.spend, Money::from_pico(53_000_000));
    }

    #[test]
    fn a_narrowed_scope_refuses_at_once() {
        let l = Limits { rpm: Some(10), ..limits() };
        let mut s = LedgerState { scope: Some(vec!["other".into()]), ..Default::default() };
        assert!(matches!(s.admit(&request("a", &l), T0), Decision::ModelNotAllowed { .. }));
        s.scope = Some(vec!["m".into()]);
        assert!(admitted(&s.admit(&request("a", &l), T0)));
    }

    #[test]
    fn tagged_enums_keep_their_json() {
        let rate = RateInfo { limit_requests: Some(10), remaining_tokens: Some(5), ..RateInfo::default() };
        let decisions = [
            Decision::Admitted { max_tokens: None, rate: rate.clone(), spend: Money::from_pico(7) },
            Decision::Admitted { max_tokens: Some(100), rate: RateInfo::default(), spend: Money::ZERO },
            Decision::RateLimited { message: "slow down".into(), retry_after_ms: 1500, rate },
            Decision::BudgetExceeded { committed: Money::from_pico(3), max_budget: Money::MAX },
            Decision::Revoked { reason: "blocked".into() },
            Decision::ModelNotAllowed { models: vec!["a".into(), "b".into()] },
            Decision::ModelBudgetExceeded { model: "m".into(), committed: Money::from_pico(5), max_budget: Money::MAX },
        ];
        for d in decisions {
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), d, "{json}");
        }
        let states = [
            EntryState::Reserved { cost: Money::from_pico(12), lease_until: T0 },
            EntryState::Settled,
            EntryState::Estimated { charged: Money::from_pico(9) },
            EntryState::Corrected,
        ];
        for state in states {
            let entry = Entry { id: "r".into(), at: T0, model: "m".into(), tokens: 4, state };
            let json = serde_json::to_string(&entry).unwrap();
            assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), entry, "{json}");
        }

        // The JSON as written by earlier versions (stored entries, answers in flight).
        let entry: Entry = serde_json::from_str(
            r#"{"id":"r","at":1,"model":"m","tokens":2,"state":{"state":"reserved","cost":3,"lease_until":4}}"#,
        )
        .unwrap();
        assert_eq!(entry.state, EntryState::Reserved { cost: Money::from_pico(3), lease_until: 4 });
        let d: Decision = serde_json::from_str(r#"{"decision":"admitted","max_tokens":null,"rate":{"limit_requests":null,"remaining_requests":null,"reset_requests_ms":null,"limit_tokens":null,"remaining_tokens":null,"reset_tokens_ms":null},"spend":1}"#).unwrap();
        assert_eq!(d, Decision::Admitted { max_tokens: None, rate: RateInfo::default(), spend: Money::from_pico(1) });
        assert_eq!(
            serde_json::to_string(&Decision::Revoked { reason: "x".into() }).unwrap(),
            r#"{"decision":"revoked","reason":"x"}"#
        );

        // What a variant needs must be there; an unknown tag is refused.
        assert!(serde_json::from_str::<Decision>(r#"{"decision":"admitted","spend":1}"#).is_err());
        assert!(serde_json::from_str::<Decision>(r#"{"decision":"maybe"}"#).is_err());
        assert!(serde_json::from_str::<Decision>(r#"{"reason":"x"}"#).is_err());
        assert!(serde_json::from_str::<EntryState>(r#"{"state":"reserved","cost":1}"#).is_err());
        assert_eq!(serde_json::from_str::<EntryState>(r#"{"state":"settled"}"#).unwrap(), EntryState::Settled);
    }

    /// Limits with budgets of `(model, µ$, period)`.
    fn model_budgets(budgets: &[(&str, u64, Option<&str>)]) -> Limits {
        let mut l = limits();
        for (model, micro, period) in budgets {
            l.model_budgets.insert(model.to_string(), micro * 1_000_000);
            if let Some(p) = period {
                l.model_budget_periods.insert(model.to_string(), p.to_string());
            }
        }
        l
    }

    fn model_spend(s: &LedgerState, model: &str) -> Money {
        Money::from_pico(s.model_spend.get(model).copied().unwrap_or(0))
    }

    fn over_model_budget(d: &Decision) -> Option<(&str, u64, u64)> {
        match d {
            Decision::ModelBudgetExceeded { model, committed, max_budget } => {
                Some((model.as_str(), committed.pico() / 1_000_000, max_budget.pico() / 1_000_000))
            }
            _ => None,
        }
    }

    #[test]
    fn a_model_budget_admits_exactly_what_it_holds_and_leaves_other_models_alone() {
        // Each request holds 10 × 1 µ$ + 20 × 2 µ$ = 50 µ$; "m" has 150 µ$ a day.
        let l = model_budgets(&[("m", 150, Some("1d"))]);
        assert!(l.needs_admission());
        let mut s = LedgerState::default();
        let decisions: Vec<Decision> = (0..6).map(|i| s.admit(&request(&format!("r{i}"), &l), T0)).collect();
        assert_eq!(decisions.iter().filter(|d| admitted(d)).count(), 3, "racing: exactly three fit");
        assert_eq!(over_model_budget(&decisions[3]), Some(("m", 150, 150)), "held counts as committed");
        // Another model of the same key is not held by m's budget.
        let mut other = request("o", &l);
        other.model = "n".into();
        assert!(admitted(&s.admit(&other, T0)));
        // Settling charges the real cost to the key and to the model: 3 + 8 = 11 µ$ each.
        for i in 0..3 {
            settle(&mut s, &format!("r{i}"), 3, 4, &l, T0 + 1);
        }
        settle(&mut s, "o", 3, 4, &l, T0 + 1);
        assert_eq!(s.spend, Money::from_pico(44_000_000));
        assert_eq!(model_spend(&s, "m"), Money::from_pico(33_000_000));
        assert!(!s.model_spend.contains_key("n"), "only budgeted models are tracked");
        // 33 µ$ spent: two more holds of 50 fit in 150, a third does not.
        assert!(admitted(&s.admit(&request("a", &l), T0 + 2)));
        assert!(admitted(&s.admit(&request("b", &l), T0 + 2)));
        assert_eq!(over_model_budget(&s.admit(&request("c", &l), T0 + 2)), Some(("m", 133, 150)));
        // A repeated settlement charges neither twice.
        settle(&mut s, "a", 3, 4, &l, T0 + 3);
        settle(&mut s, "a", 3, 4, &l, T0 + 3);
        assert_eq!(model_spend(&s, "m"), Money::from_pico(44_000_000));
    }

    #[test]
    fn a_model_budget_resets_with_its_own_period() {
        let l = Limits {
            max_budget: Some(Money::from_pico(10_000_000_000)),
            budget_duration: Some("30d".into()),
            ..model_budgets(&[("m", 60, Some("2s"))])
        };
        let mut s = LedgerState::default();
        assert!(admitted(&s.admit(&request("a", &l), T0)));
        settle(&mut s, "a", 10, 20, &l, T0 + 10); // 50 µ$
        assert_eq!(over_model_budget(&s.admit(&request("b", &l), T0 + 1_999)), Some(("m", 50, 60)));
        assert_eq!(model_spend(&s, "m"), Money::from_pico(50_000_000));
        assert_eq!(model_period_end(&l, &s.model_period_start, "m"), Some(T0 + 2_000));
        // The model's period ends; the key's 30-day spend goes on.
        assert!(admitted(&s.admit(&request("b", &l), T0 + 2_000)));
        assert_eq!(model_spend(&s, "m"), Money::ZERO);
        assert_eq!(s.spend, Money::from_pico(50_000_000));
        assert_eq!(model_period_end(&l, &s.model_period_start, "m"), Some(T0 + 2_000 + 2_000));
        // Whole idle periods are skipped.
        settle(&mut s, "b", 10, 20, &l, T0 + 2_001);
        s.maintain(T0 + 9_500, &l);
        assert_eq!((model_spend(&s, "m"), s.model_period_start["m"]), (Money::ZERO, T0 + 8_000));
        // Without a period it never resets.
        let forever = model_budgets(&[("m", 60, None)]);
        let mut s = LedgerState::default();
        assert!(admitted(&s.admit(&request("a", &forever), T0)));
        settle(&mut s, "a", 10, 20, &forever, T0);
        s.maintain(T0 + 400 * 86_400_000, &forever);
        assert_eq!(over_model_budget(&s.admit(&request("b", &forever), T0 + 400 * 86_400_000)), Some(("m", 50, 60)));
        assert_eq!(model_spend(&s, "m"), Money::from_pico(50_000_000));
        assert_eq!(model_period_end(&forever, &s.model_period_start, "m"), None);
    }

    #[test]
    fn the_tighter_of_the_key_and_model_budgets_refuses_and_imposes_max_tokens() {
        let both = |key: u64, model: u64| Limits {
            max_budget: Some(Money::from_pico(key * 1_000_000)),
            ..model_budgets(&[("m", model, None)])
        };
        let mut r = request("a", &both(1_000, 40));
        assert_eq!(over_model_budget(&LedgerState::default().admit(&r, T0)), Some(("m", 0, 40)));
        assert!(matches!(
            LedgerState::default().admit(&request("a", &both(40, 1_000)), T0),
            Decision::BudgetExceeded { .. }
        ));
        // Without max_tokens: as many tokens as the tighter budget pays for, (40 - 10) / 2 = 15.
        r.max_tokens = None;
        let Decision::Admitted { max_tokens, .. } = LedgerState::default().admit(&r, T0) else { panic!() };
        assert_eq!(max_tokens, Some(15));
        r.limits = model_budgets(&[("m", 40, None)]);
        let Decision::Admitted { max_tokens, .. } = LedgerState::default().admit(&r, T0) else { panic!() };
        assert_eq!(max_tokens, Some(15), "a model budget alone imposes one too");
        // Nothing left for even one token: the model's budget refuses.
        r.limits = both(1_000, 11);
        assert_eq!(over_model_budget(&LedgerState::default().admit(&r, T0)), Some(("m", 0, 11)));
        r.limits = both(11, 1_000);
        assert!(matches!(LedgerState::default().admit(&r, T0), Decision::BudgetExceeded { .. }));
    }

    #[test]
    fn a_model_budget_follows_fallbacks_and_abandoned_reservations() {
        let l = model_budgets(&[("m", 100, None), ("n", 100, None)]);
        let mut s = LedgerState::default();
        assert!(admitted(&s.admit(&request("a", &l), T0)));
        let mut moved = request("a", &l);
        moved.model = "n".into();
        assert!(admitted(&s.admit(&moved, T0 + 1)));
        assert_eq!((s.model_committed("m"), s.model_committed("n")), (Money::ZERO, Money::from_pico(50_000_000)));
        settle(&mut s, "a", 1, 1, &l, T0 + 2);
        assert_eq!(model_spend(&s, "n"), Money::from_pico(3_000_000));
        assert_eq!(model_spend(&s, "m"), Money::ZERO);
        // An abandoned reservation is charged to its model as held, then corrected.
        assert!(admitted(&s.admit(&request("b", &l), T0 + 3)));
        s.maintain(T0 + 3 + RESERVATION_MAX_MS, &l);
        assert_eq!(model_spend(&s, "m"), Money::from_pico(50_000_000));
        settle(&mut s, "b", 1, 1, &l, T0 + 4 + RESERVATION_MAX_MS);
        assert_eq!(model_spend(&s, "m"), Money::from_pico(3_000_000));
    }

    #[test]
    fn a_scope_naming_an_access_group_admits_the_groups_models() {
        let l = Limits { rpm: Some(10), ..limits() };
        let mut s = LedgerState { scope: Some(vec!["x".into(), "cheap".into()]), ..Default::default() };
        assert!(matches!(s.admit(&request("a", &l), T0), Decision::ModelNotAllowed { .. }));
        let mut r = request("a", &l);
        r.access_groups = vec!["beta".into(), "cheap".into()];
        assert!(admitted(&s.admit(&r, T0)), "m is in cheap now, whatever the scope listed");
        r.access_groups = vec!["beta".into()];
        r.id = "b".into();
        assert!(matches!(s.admit(&r, T0), Decision::ModelNotAllowed { .. }));
    }

    #[test]
    fn state_and_requests_stored_before_model_budgets_still_read() {
        let state: LedgerState = serde_json::from_str(
            r#"{"entries":[],"spend":5,"period_start":null,"soft_alerted":false,"revoked":null,"key_hash":null}"#,
        )
        .unwrap();
        assert!(state.model_spend.is_empty());
        let limits: Limits = serde_json::from_str(
            r#"{"rpm":1,"tpm":null,"max_parallel":null,"max_budget":null,"budget_duration":null,"soft_budget":null}"#,
        )
        .unwrap();
        assert!(limits.model_budgets.is_empty());
        // Nothing new on the wire for a key without them.
        let json = serde_json::to_string(&request("a", &limits)).unwrap();
        assert!(!json.contains("model_budgets") && !json.contains("access_groups"), "{json}");
    }
}
