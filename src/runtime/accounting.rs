//! Who answers for a request and what it costs: admission before it is forwarded (keys with
//! limits or a budget, and deployments with enforced limits) and settlement after it, on
//! every path, in the key's ledger. The master key has no ledger of its own: its calls are
//! in the log lines, and it pays no Durable Object call unless a deployment's limits apply.

use worker::{console_error, console_log, Env};

use super::ledger::LedgerStub;
use super::{now_ms, Call, Caller};
use crate::config::Deployment;
use crate::databricks::Usage;
use crate::ledger::{self, SettleRequest, SpendLogRow};
use crate::limiter::{AdmitRequest, Decision, Limits, RateInfo, Settlement};
use crate::openai::{ApiError, ErrorKind};
use crate::pricing::{self, PriceSource, Prices};

/// A request may run this long before its slot frees itself without a settlement:
/// Databricks stops any model execution after 297 s.
const MAX_EXECUTION_MS: u64 = 300_000;
const LEASE_MARGIN_MS: u64 = 60_000;
/// The most completion tokens imposed on a budgeted key's request that sets no `max_tokens`,
/// when the model's own `max_output_tokens` is not configured.
const DEFAULT_OUTPUT_CAP: u64 = 16_384;

struct Party {
    ledger: LedgerStub,
    limits: Limits,
    admitted: bool,
}

pub struct Account {
    /// The virtual key's ledger; `None` for the master key.
    key: Option<Party>,
    deployment: Option<Party>,
    token: Option<String>,
    prices: Prices,
    output_cap: u64,
    lease_ms: u64,
    row: SpendLogRow,
}

/// How a request ended, for its settlement.
pub struct Outcome {
    pub usage: Option<Usage>,
    /// The usage is an estimate (a stream cut before Databricks reported any).
    pub estimated: bool,
    pub status: u16,
    pub response_id: Option<String>,
}

impl Outcome {
    /// A request that produced nothing billable (refused or failed upstream).
    pub fn failed(status: u16) -> Self {
        Outcome { usage: None, estimated: false, status, response_id: None }
    }
}

impl Account {
    pub fn open(
        call: &Call<'_>,
        caller: &Caller,
        group: &str,
        deployment: &Deployment,
        enforce_deployment_limits: bool,
        stream: bool,
    ) -> Result<Self, ApiError> {
        let (key, token, alias) = match caller {
            Caller::Master => (None, None, None),
            Caller::Key(r) => {
                let ledger = LedgerStub::open(call.env, &ledger::key_ledger(&r.key_id))?;
                let party = Party { ledger, limits: Limits::from_key(r), admitted: false };
                (Some(party), Some(r.token.clone()), r.key_alias.clone())
            }
        };
        let deployment_party = match (enforce_deployment_limits, deployment.rpm, deployment.tpm) {
            (true, rpm, tpm) if rpm.is_some() || tpm.is_some() => Some(Party {
                ledger: LedgerStub::open(call.env, &ledger::deployment_ledger(&deployment.id))?,
                limits: Limits { rpm, tpm, ..Limits::default() },
                admitted: false,
            }),
            _ => None,
        };
        let row = SpendLogRow {
            request_id: call.log.call_id.clone(),
            call_id: call.log.call_id.clone(),
            api_key: token.clone().unwrap_or_default(),
            key_alias: alias,
            model_group: group.to_string(),
            deployment: deployment.id.clone(),
            start_time: call.started_ms,
            streamed: stream,
            ..Default::default()
        };
        Ok(Account {
            key,
            deployment: deployment_party,
            token,
            prices: pricing::prices_for(deployment),
            output_cap: deployment.info.max_output_tokens.unwrap_or(DEFAULT_OUTPUT_CAP),
            lease_ms: deployment.timeout_ms.min(MAX_EXECUTION_MS) + LEASE_MARGIN_MS,
            row,
        })
    }

    pub fn prices(&self) -> Prices {
        self.prices
    }

    /// True when the request holds a reservation somewhere: it is settled before the answer
    /// is released, so that the caller's next request finds its slot and budget freed.
    pub fn settles_first(&self) -> bool {
        self.key.as_ref().is_some_and(|k| k.admitted) || self.deployment.as_ref().is_some_and(|d| d.admitted)
    }

    /// True when there is nothing to settle (the master key, no deployment limits).
    pub fn has_no_ledger(&self) -> bool {
        self.key.is_none() && self.deployment.is_none()
    }

    /// Admits the request where limits apply (the key's ledger first, then the
    /// deployment's). Returns a `max_tokens` to impose when the budget requires one.
    pub async fn admit(
        &mut self,
        call: &mut Call<'_>,
        prompt_tokens_max: u64,
        max_tokens: Option<u64>,
    ) -> Result<Option<u64>, ApiError> {
        let mut request = AdmitRequest {
            id: self.row.call_id.clone(),
            model: self.row.model_group.clone(),
            token: self.token.clone(),
            prompt_tokens_max,
            max_tokens,
            output_cap: self.output_cap,
            prices: self.prices,
            lease_ms: self.lease_ms,
            limits: Limits::default(),
        };
        let mut imposed = None;
        if let Some(key) = self.key.as_mut().filter(|k| k.limits.needs_admission()) {
            request.limits = key.limits.clone();
            match key.ledger.admit(&request).await? {
                Decision::Admitted { max_tokens, rate, .. } => {
                    add_rate_headers(call, &rate);
                    key.admitted = true;
                    imposed = max_tokens;
                }
                Decision::RateLimited { message, retry_after_ms, rate } => {
                    add_rate_headers(call, &rate);
                    return Err(rate_limited(message, retry_after_ms));
                }
                Decision::BudgetExceeded { committed, max_budget } => {
                    let message = format!(
                        "Budget has been exceeded! Current cost: {}, Max budget: {}",
                        pricing::format_usd(committed),
                        pricing::format_usd(max_budget)
                    );
                    return Err(ApiError::new(400, ErrorKind::BudgetExceeded, message));
                }
                Decision::Revoked { reason } => return Err(revoked(&reason)),
            }
        }
        if let Some(deployment) = &mut self.deployment {
            request.token = None;
            request.max_tokens = imposed.or(max_tokens);
            request.limits = deployment.limits.clone();
            let refused = match deployment.ledger.admit(&request).await {
                Ok(Decision::Admitted { .. }) => {
                    deployment.admitted = true;
                    None
                }
                Ok(Decision::RateLimited { message, retry_after_ms, .. }) => Some(rate_limited(
                    format!("Deployment `{}` of `{}`: {message}", self.row.deployment, self.row.model_group),
                    retry_after_ms,
                )),
                Ok(other) => Some(ApiError::internal(format!("unexpected deployment admission: {other:?}"))),
                Err(e) => Some(e),
            };
            if let Some(error) = refused {
                if let Some(key) = self.key.as_ref().filter(|k| k.admitted) {
                    if let Err(e) = key.ledger.release(&self.row.call_id).await {
                        console_error!("releasing call {} failed: {}", self.row.call_id, e.message);
                    }
                }
                return Err(error);
            }
        }
        Ok(imposed)
    }

    /// What an outcome costs, in pico-dollars.
    pub fn cost(&self, outcome: &Outcome) -> u64 {
        outcome.usage.map_or(0, |u| self.prices.cost(&u))
    }

    /// Records the outcome in the key's ledger (spend and spend log) and settles the
    /// deployment's reservation. Returns the key's spend afterwards, when known. A failed
    /// settlement is logged, never turned into an error for a request already answered.
    pub async fn settle(self, outcome: Outcome) -> Option<u64> {
        let usage = outcome.usage.unwrap_or_default();
        let cost = self.cost(&outcome);
        let settlement = |limits: &Limits| Settlement {
            id: self.row.call_id.clone(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost,
            limits: limits.clone(),
        };
        let mut spend = None;
        if let Some(key) = &self.key {
            let row = SpendLogRow {
                request_id: outcome.response_id.clone().unwrap_or_else(|| self.row.call_id.clone()),
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                spend: cost,
                end_time: now_ms(),
                status: outcome.status,
                estimated: outcome.estimated,
                ..self.row.clone()
            };
            let request = SettleRequest { settlement: settlement(&key.limits), row: Some(row) };
            match key.ledger.settle(&request).await {
                Ok(settled) => {
                    if settled.soft_budget_crossed {
                        let line = serde_json::json!({
                            "event": "soft_budget_crossed",
                            "key_hash": self.row.api_key.get(..16),
                            "key_alias": self.row.key_alias,
                            "spend": pricing::format_usd(settled.spend),
                            "soft_budget": key.limits.soft_budget.map(pricing::format_usd),
                        });
                        console_log!("{line}");
                    }
                    spend = Some(settled.spend);
                }
                Err(e) => console_error!("settling call {} failed: {}", self.row.call_id, e.message),
            }
        }
        if let Some(deployment) = self.deployment.as_ref().filter(|d| d.admitted) {
            let request = SettleRequest { settlement: settlement(&deployment.limits), row: None };
            if let Err(e) = deployment.ledger.settle(&request).await {
                console_error!("settling call {} with its deployment failed: {}", self.row.call_id, e.message);
            }
        }
        spend
    }
}

/// Settles a request that ended without reaching the point where its answer is accounted,
/// in the background unless the caller's next request depends on it.
pub async fn settle_failed(account: Account, status: u16, call: &Call<'_>) {
    if account.has_no_ledger() {
        return;
    }
    if account.settles_first() {
        account.settle(Outcome::failed(status)).await;
    } else {
        call.ctx.wait_until(async move {
            account.settle(Outcome::failed(status)).await;
        });
    }
}

/// Adds the cost to the log line, saying when a model has no known price.
pub fn log_cost(call: &mut Call<'_>, prices: Prices, cost: u64) {
    call.log.cost = Some(pricing::format_usd(cost));
    if prices.source == PriceSource::Unknown {
        call.log.price = Some("unknown: charged 0");
    }
}

fn rate_limited(message: String, retry_after_ms: u64) -> ApiError {
    let mut error = ApiError::new(429, ErrorKind::RateLimit, message);
    error.retry_after_s = Some(retry_after_ms.div_ceil(1000).max(1));
    error
}

fn revoked(reason: &str) -> ApiError {
    ApiError::unauthorized(match reason {
        "blocked" => "This API key is blocked. An admin can unblock it with /key/unblock.",
        "regenerated" => "This API key was regenerated; use the new key.",
        _ => "This API key was deleted.",
    })
}

fn add_rate_headers(call: &mut Call<'_>, rate: &RateInfo) {
    let seconds = |ms: u64| ms.div_ceil(1000).to_string();
    let pairs = [
        ("x-ratelimit-limit-requests", rate.limit_requests.map(|v| v.to_string())),
        ("x-ratelimit-remaining-requests", rate.remaining_requests.map(|v| v.to_string())),
        ("x-ratelimit-reset-requests", rate.reset_requests_ms.map(seconds)),
        ("x-ratelimit-limit-tokens", rate.limit_tokens.map(|v| v.to_string())),
        ("x-ratelimit-remaining-tokens", rate.remaining_tokens.map(|v| v.to_string())),
        ("x-ratelimit-reset-tokens", rate.reset_tokens_ms.map(seconds)),
    ];
    for (name, value) in pairs {
        if let Some(value) = value {
            call.headers.push((name, value));
        }
    }
}

/// Tells a key's ledger at once that the key was blocked, unblocked, deleted or regenerated.
pub async fn notify_revocation(env: &Env, key_id: &str, reason: Option<&str>, token: &str) -> Result<(), ApiError> {
    let stub = LedgerStub::open(env, &ledger::key_ledger(key_id))?;
    stub.revoke(&ledger::RevokeRequest { reason: reason.map(str::to_string), token: Some(token.to_string()) }).await
}
