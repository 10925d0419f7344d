//! Who answers for a request and what it costs: admission before it is forwarded (keys with
//! limits or a budget, and deployments with enforced limits) and settlement after it, on
//! every path, in the key's ledger. The master key has no ledger of its own: its calls are
//! in the log lines, and it pays no Durable Object call unless a deployment's limits apply.
//!
//! A key without limits or a budget holds nothing: its settlements share Durable Object calls
//! with the isolate's other requests for the same key (`settlements`).

use futures_util::future::{FutureExt, LocalBoxFuture};
use worker::{console_error, Context, Env};

use super::objects::ledger::LedgerStub;
use super::{now_ms, Call, Caller};
use super::{reports, settlements};
use crate::attribution::Attribution;
use crate::config::Deployment;
use crate::ledger::messages::{self, SettleRequest, SpendLogRow};
use crate::ledger::{AdmitRequest, Decision, Limits, RateInfo, Settlement};
use crate::log::RequestLog;
use crate::money::Money;
use crate::openai::{ApiError, Usage};
use crate::pricing::{self, PriceSource, Prices};
use crate::prompt::{PromptTally, Template};
use crate::refusals;
use crate::reports::ReportEvent;

/// A request may run this long before its slot frees itself without a settlement:
/// Databricks stops any model execution after 297 s.
const MAX_EXECUTION_MS: u64 = 300_000;
const LEASE_MARGIN_MS: u64 = 60_000;
/// The most completion tokens imposed on a budgeted key's request that sets no `max_tokens`,
/// when the model's own `max_output_tokens` is not configured.
const DEFAULT_OUTPUT_CAP: u64 = 16_384;

struct Party {
    /// The ledger object's name.
    name: String,
    /// A handle on the object, when this request calls it itself: a key without limits or a
    /// budget never does (its settlement goes in a batch), so it pays for no handle.
    ledger: Option<LedgerStub>,
    limits: Limits,
    admitted: bool,
}

pub struct Account {
    /// The virtual key's ledger; `None` for the master key.
    key: Option<Party>,
    /// The ledger of the deployment now serving the request, when its limits are enforced.
    deployment: Option<Party>,
    /// Attempts made so far: each deployment admission gets its own id.
    attempts: u32,
    key_hash: Option<String>,
    /// The prices of the deployment now serving the request.
    prices: Prices,
    lease_ms: u64,
    row: SpendLogRow,
    /// The `x-ratelimit-*` figures of the key's last admission.
    rate: Option<RateInfo>,
    env: Env,
}

/// What a settlement did: the request's cost, and the key's spend when its ledger answered.
pub struct Settled {
    pub cost: Money,
    pub key_spend: Option<Money>,
    /// The reports batch's sender, when this request must run it and had no `waitUntil` of
    /// its own (a stream's pump): awaited once the answer's last bytes are out.
    pub report: Option<LocalBoxFuture<'static, ()>>,
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

/// What a key is asked to reserve for a request that any of `deployments` may serve.
pub struct Reservation {
    /// What token rate limits admit on.
    pub prompt_tokens_estimate: u64,
    /// What a budget holds: sound for the dearest template among the deployments.
    pub prompt_tokens_bound: u64,
    pub max_tokens: Option<u64>,
    pub choices: u64,
    /// The highest prices among the deployments that may serve it.
    pub prices: Prices,
    pub output_cap: u64,
    pub lease_ms: u64,
    /// Model groups among them that the gateway cannot price.
    pub unpriced: Vec<String>,
}

impl Reservation {
    pub fn new(deployments: &[&Deployment], tally: &PromptTally, max_tokens: Option<u64>, choices: u64) -> Self {
        let mut prices = Prices::UNKNOWN;
        let mut unpriced: Vec<String> = Vec::new();
        for d in deployments {
            let p = pricing::prices_for(d);
            prices = prices.max(p);
            if p.source != PriceSource::Unknown {
                prices.source = p.source;
            } else if !unpriced.contains(&d.model_name) {
                unpriced.push(d.model_name.clone());
            }
        }
        // The hold prices every prompt token at the dearest way it may be billed (a cache write
        // costs more than a plain input token).
        let prices = prices.for_hold();
        let template = deployments.iter().map(|d| Template::for_endpoint(&d.endpoint)).reduce(Template::max);
        let output_cap = deployments
            .iter()
            .map(|d| d.info.max_output_tokens.unwrap_or(DEFAULT_OUTPUT_CAP))
            .max()
            .unwrap_or(DEFAULT_OUTPUT_CAP);
        let timeout = deployments.iter().map(|d| d.timeout_ms).max().unwrap_or(MAX_EXECUTION_MS);
        Reservation {
            prompt_tokens_estimate: tally.estimate(),
            prompt_tokens_bound: template.map_or(u64::MAX, |t| tally.bound(&t)),
            max_tokens,
            choices,
            prices,
            output_cap,
            lease_ms: timeout.min(MAX_EXECUTION_MS) + LEASE_MARGIN_MS,
            unpriced,
        }
    }

    fn admit_request(
        &self,
        id: String,
        model: String,
        key_hash: Option<String>,
        prices: Prices,
        limits: Limits,
    ) -> AdmitRequest {
        AdmitRequest {
            id,
            model,
            key_hash,
            prompt_tokens_estimate: self.prompt_tokens_estimate,
            prompt_tokens_bound: self.prompt_tokens_bound,
            max_tokens: self.max_tokens,
            choices: self.choices,
            output_cap: self.output_cap,
            prices,
            lease_ms: self.lease_ms,
            limits,
        }
    }
}

impl Account {
    pub fn open(
        call: &Call<'_>,
        caller: &Caller,
        group: &str,
        stream: bool,
        attribution: Attribution,
    ) -> Result<Self, ApiError> {
        let (team_id, user_id) = match caller {
            Caller::Master => (None, None),
            Caller::Key(r) => (r.team_id.clone(), r.user_id.clone()),
        };
        let (key, key_hash, alias) = match caller {
            Caller::Master => (None, None, None),
            Caller::Key(r) => {
                let name = messages::key_ledger(&r.key_id);
                let limits = Limits::from_key(r);
                let ledger = if limits.needs_admission() { Some(LedgerStub::open(call.env, &name)?) } else { None };
                let party = Party { name, ledger, limits, admitted: false };
                (Some(party), Some(r.key_hash.clone()), r.key_alias.clone())
            }
        };
        let row = SpendLogRow {
            request_id: call.log.call_id.clone(),
            call_id: call.log.call_id.clone(),
            api_key: key_hash.clone().unwrap_or_default(),
            key_alias: alias,
            model_group: group.to_string(),
            start_time: call.started_ms,
            streamed: stream,
            team_id,
            user_id,
            end_user: attribution.end_user,
            tags: attribution.tags,
            ..Default::default()
        };
        Ok(Account {
            key,
            deployment: None,
            attempts: 0,
            key_hash,
            prices: Prices::UNKNOWN,
            lease_ms: MAX_EXECUTION_MS + LEASE_MARGIN_MS,
            row,
            rate: None,
            env: call.env.clone(),
        })
    }

    pub fn prices(&self) -> Prices {
        self.prices
    }

    /// The `x-ratelimit-*` figures of the key's last admission, refused or not.
    pub fn rate(&self) -> Option<RateInfo> {
        self.rate.clone()
    }

    /// Admits the request with the key's limits and budget, if it has any. Returns a
    /// `max_tokens` to impose when the budget requires one.
    pub async fn admit(&mut self, reservation: &Reservation) -> Result<Option<u64>, ApiError> {
        self.lease_ms = reservation.lease_ms;
        let Some(key) = self.key.as_mut().filter(|k| k.limits.needs_admission()) else { return Ok(None) };
        if key.limits.max_budget.is_some() {
            if let Some(model) = reservation.unpriced.first() {
                return Err(refusals::unpriced(model));
            }
        }
        let request = reservation.admit_request(
            self.row.call_id.clone(),
            self.row.model_group.clone(),
            self.key_hash.clone(),
            reservation.prices,
            key.limits.clone(),
        );
        let decision = stub(&key.ledger)?.admit(&request).await?;
        let admitted = key_decision(decision, &mut self.rate)?;
        key.admitted = true;
        Ok(admitted)
    }

    /// The request moves to a fallback `group`: the key's ledger re-admits it there (its
    /// per-model limits and current scope apply); its budget hold moves with it.
    pub async fn enter_group(&mut self, group: &str, reservation: &Reservation) -> Result<(), ApiError> {
        if let Some(key) = self.key.as_mut().filter(|k| k.admitted) {
            let request = reservation.admit_request(
                self.row.call_id.clone(),
                group.to_string(),
                self.key_hash.clone(),
                reservation.prices,
                key.limits.clone(),
            );
            let decision = stub(&key.ledger)?.admit(&request).await?;
            key_decision(decision, &mut self.rate)?;
        }
        self.row.model_group = group.to_string();
        Ok(())
    }

    /// Makes `deployment` the one serving the request: its prices apply, and with enforced
    /// deployment limits it must admit the attempt. `Err` is a 429 naming the deployment.
    pub async fn use_deployment(
        &mut self,
        env: &Env,
        deployment: &Deployment,
        enforce: bool,
        reservation: &Reservation,
    ) -> Result<(), ApiError> {
        self.prices = pricing::prices_for(deployment);
        self.row.deployment = deployment.id.clone();
        self.attempts += 1;
        if !enforce || (deployment.rpm.is_none() && deployment.tpm.is_none()) {
            return Ok(());
        }
        let name = messages::deployment_ledger(&deployment.id);
        let party = Party {
            ledger: Some(LedgerStub::open(env, &name)?),
            name,
            limits: Limits { rpm: deployment.rpm, tpm: deployment.tpm, ..Limits::default() },
            admitted: false,
        };
        let request = reservation.admit_request(
            self.attempt_id(),
            deployment.model_name.clone(),
            None,
            self.prices,
            party.limits.clone(),
        );
        match stub(&party.ledger)?.admit(&request).await? {
            Decision::Admitted { .. } => {
                self.deployment = Some(Party { admitted: true, ..party });
                Ok(())
            }
            Decision::RateLimited { message, retry_after_ms, .. } => Err(refusals::rate_limited(
                format!("Deployment `{}` of `{}`: {message}", deployment.id, deployment.model_name),
                retry_after_ms,
            )),
            other => Err(ApiError::internal(format!("unexpected deployment admission: {other:?}"))),
        }
    }

    /// The attempt on the current deployment failed: its reservation is settled empty (the
    /// request still counts against the deployment's requests per minute).
    pub async fn deployment_failed(&mut self) {
        if let Some(party) = self.deployment.take() {
            let mut settlement = self.settlement(&party.limits, Usage::default(), Money::ZERO);
            settlement.id = self.attempt_id();
            let request = SettleRequest { settlement, row: None };
            if let Err(e) = settle_on(&party.ledger, &request).await {
                console_error!("settling attempt {} failed: {}", self.attempt_id(), e.message);
            }
        }
    }

    fn attempt_id(&self) -> String {
        format!("{}#{}", self.row.call_id, self.attempts)
    }

    fn settlement(&self, limits: &Limits, usage: Usage, cost: Money) -> Settlement {
        Settlement {
            id: self.row.call_id.clone(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost,
            limits: limits.clone(),
        }
    }

    /// What an outcome costs, in pico-dollars.
    pub fn cost(&self, outcome: &Outcome) -> Money {
        outcome.usage.map_or(Money::ZERO, |u| self.prices.cost(&u))
    }

    /// The one settlement of a request, on every path: records the outcome in the key's
    /// ledger (spend and spend log) and settles the serving deployment's reservation. What
    /// holds a reservation is settled before the answer (or the end of the stream) leaves, so
    /// that the caller's next request finds its slot and budget freed. A key that holds
    /// nothing joins the isolate's batch for its ledger (`settlements`); a sender this request
    /// must start runs in `ctx`'s `waitUntil` when there is one (an answer's handler),
    /// otherwise here (a stream's pump, already in one). Every request's event joins the
    /// reports batch (`reports`). A failed settlement is logged, never turned into an error
    /// for a request already answered.
    pub async fn settle(self, outcome: Outcome, ctx: Option<&Context>) -> Settled {
        let usage = outcome.usage.unwrap_or_default();
        let cost = self.cost(&outcome);
        let row = SpendLogRow {
            request_id: outcome.response_id.clone().unwrap_or_else(|| self.row.call_id.clone()),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cache_read_tokens: usage.cache_read_tokens,
            cache_creation_tokens: usage.cache_creation_tokens,
            spend: cost,
            end_time: now_ms(),
            status: outcome.status,
            estimated: outcome.estimated,
            ..self.row.clone()
        };
        // Every request, the master key's included, counts in the gateway's reports.
        let report = reports::record(&self.env, ctx, ReportEvent::of(&row)).map(|f| f.boxed_local());
        let mut settled = Settled { cost, key_spend: None, report };
        if let Some(key) = &self.key {
            let request = SettleRequest { settlement: self.settlement(&key.limits, usage, cost), row: Some(row) };
            if key.admitted {
                match settle_on(&key.ledger, &request).await {
                    Ok(result) => {
                        settlements::report_soft_budget(&request, &result);
                        settled.key_spend = Some(result.spend);
                    }
                    Err(e) => console_error!("settling call {} failed: {}", self.row.call_id, e.message),
                }
            } else if let Some(sender) = settlements::enqueue(&self.env, &key.name, request) {
                match ctx {
                    Some(ctx) => ctx.wait_until(sender),
                    None => sender.await,
                }
            }
        }
        if let Some(deployment) = self.deployment.as_ref().filter(|d| d.admitted) {
            let mut settlement = self.settlement(&deployment.limits, usage, cost);
            settlement.id = self.attempt_id();
            if let Err(e) = settle_on(&deployment.ledger, &SettleRequest { settlement, row: None }).await {
                console_error!("settling call {} with {} failed: {}", self.row.call_id, deployment.name, e.message);
            }
        }
        settled
    }

    /// Records which group answered (after a fallback).
    pub fn answered_by(&mut self, group: &str) {
        self.row.model_group = group.to_string();
    }
}

/// The handle of a ledger this request calls itself (always opened for those).
fn stub(ledger: &Option<LedgerStub>) -> Result<&LedgerStub, ApiError> {
    ledger.as_ref().ok_or_else(|| ApiError::internal("a ledger was called without a handle"))
}

async fn settle_on(ledger: &Option<LedgerStub>, request: &SettleRequest) -> Result<crate::ledger::Settled, ApiError> {
    stub(ledger)?.settle(request).await
}

/// Adds the cost to a log line, saying when a model has no known price.
pub fn log_cost(log: &mut RequestLog, prices: Prices, cost: Money) {
    log.cost = Some(cost.to_string());
    if prices.source == PriceSource::Unknown {
        log.price = Some("unknown: charged 0");
    }
}

/// What the key's ledger decided: the `max_tokens` to impose, or the caller's error. The
/// rate figures are kept for the answer's headers either way.
fn key_decision(decision: Decision, rate_seen: &mut Option<RateInfo>) -> Result<Option<u64>, ApiError> {
    match decision {
        Decision::Admitted { max_tokens, rate, .. } => {
            *rate_seen = Some(rate);
            Ok(max_tokens)
        }
        Decision::RateLimited { message, retry_after_ms, rate } => {
            *rate_seen = Some(rate);
            Err(refusals::rate_limited(message, retry_after_ms))
        }
        Decision::BudgetExceeded { committed, max_budget } => Err(refusals::budget_exceeded(committed, max_budget)),
        Decision::Revoked { reason } => Err(refusals::key_revoked(&reason, None)),
        Decision::ModelNotAllowed { models } => Err(refusals::model_not_allowed(&models)),
    }
}

/// Tells a key's ledger at once that the key was blocked, unblocked, deleted or regenerated,
/// and which models it may now use.
pub async fn notify_revocation(
    env: &Env,
    key_id: &str,
    reason: Option<&str>,
    key_hash: &str,
    scope: Option<Vec<String>>,
) -> Result<(), ApiError> {
    let stub = LedgerStub::open(env, &messages::key_ledger(key_id))?;
    let request =
        messages::RevokeRequest { reason: reason.map(str::to_string), key_hash: Some(key_hash.to_string()), scope };
    stub.revoke(&request).await
}
