//! Who answers for a request and what it costs: admission before it is forwarded (keys with
//! limits or a budget, and deployments with enforced limits) and settlement after it, on
//! every path, in the key's ledger. The master key has no ledger of its own: its calls are
//! in the log lines, and it pays no Durable Object call unless a deployment's limits apply.
//!
//! A key without limits or a budget holds nothing: its settlements share Durable Object calls
//! with the isolate's other requests for the same key (`settlements`).
//!
//! A request also draws on the key's team and internal user and on its end user (a customer),
//! when they have records (`partystore`). Each of those with limits or a budget admits it in
//! its own ledger, all at once; when one refuses, those that admitted release their hold, so
//! that a refused request costs nobody anything. Each is settled like the key: directly when
//! it holds a reservation, else in the isolate's batch for its ledger.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use futures_util::future::{FutureExt, LocalBoxFuture};
use worker::{console_error, Context, Env};

use super::objects::ledger::LedgerStub;
use super::partystore::Drawn;
use super::{now_ms, Call, Caller};
use super::{reports, settlements};
use crate::attribution::Attribution;
use crate::config::Deployment;
use crate::embedded;
use crate::ledger::messages::{self, ReleaseRequest, SettleRequest, SpendLogRow};
use crate::ledger::{AdmitRequest, Decision, Limits, RateInfo, Settlement};
use crate::log::RequestLog;
use crate::money::Money;
use crate::openai::{ApiError, Usage};
use crate::parties::PartyKind;
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
    /// Whose ledger it is besides the key's: a refusal names it (`Team=<id>`).
    of: Option<(PartyKind, String)>,
}

impl Party {
    fn opened(env: &Env, name: String, limits: Limits, of: Option<(PartyKind, String)>) -> Result<Self, ApiError> {
        let ledger = if limits.needs_admission() { Some(LedgerStub::open(env, &name)?) } else { None };
        Ok(Party { name, ledger, limits, admitted: false, of })
    }
}

pub struct Account {
    /// The virtual key's ledger; `None` for the master key.
    key: Option<Party>,
    /// The ledgers of the key's team and user and of the request's customer, when they exist.
    others: Vec<Party>,
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
            access_groups: Vec::new(),
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
        drawn: Vec<Drawn>,
    ) -> Result<Self, ApiError> {
        let (team_id, user_id) = match caller {
            Caller::Master => (None, None),
            Caller::Key(r) => (r.team_id.clone(), r.user_id.clone()),
        };
        let (key, key_hash, alias) = match caller {
            Caller::Master => (None, None, None),
            Caller::Key(r) => {
                let party = Party::opened(call.env, messages::key_ledger(&r.key_id), Limits::from_key(r), None)?;
                (Some(party), Some(r.key_hash.clone()), r.key_alias.clone())
            }
        };
        let others = drawn
            .into_iter()
            .map(|d| {
                let name = d.kind.ledger(&d.record.id);
                Party::opened(call.env, name, d.record.limits(), Some((d.kind, d.record.id)))
            })
            .collect::<Result<Vec<_>, _>>()?;
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
            others,
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

    /// Admits the request in the ledger of every party with limits or a budget (the key, its
    /// team and user, the customer), all at once. If any refuses, those that admitted release
    /// their hold and the refusal is answered (the first in that order). Returns a
    /// `max_tokens` to impose when a budget requires one (the least of them).
    pub async fn admit(&mut self, reservation: &Reservation) -> Result<Option<u64>, ApiError> {
        self.lease_ms = reservation.lease_ms;
        let (row, key_hash) = (&self.row, &self.key_hash);
        let parties: Vec<&mut Party> =
            self.key.iter_mut().chain(self.others.iter_mut()).filter(|p| p.limits.needs_admission()).collect();
        if parties.is_empty() {
            return Ok(None);
        }
        // A budget cannot hold what has no price: a party's budget, or a key's for one model.
        let budgeted = |model: &String| {
            parties.iter().any(|p| p.limits.max_budget.is_some() || p.limits.model_budgets.contains_key(model))
        };
        if let Some(model) = reservation.unpriced.iter().find(|m| budgeted(m)) {
            return Err(refusals::unpriced(model));
        }
        let requests: Vec<AdmitRequest> = parties
            .iter()
            .map(|p| {
                let hash = if p.of.is_none() { key_hash.clone() } else { None };
                let group = row.model_group.clone();
                let mut request =
                    reservation.admit_request(row.call_id.clone(), group, hash, reservation.prices, p.limits.clone());
                request.access_groups = access_groups_of(&request.model);
                request
            })
            .collect();
        let decisions =
            join_each(parties.iter().zip(&requests).map(|(p, r)| async move { stub(&p.ledger)?.admit(r).await })).await;
        let mut imposed: Option<u64> = None;
        let mut refusal: Option<ApiError> = None;
        let mut parties = parties;
        for (party, decision) in parties.iter_mut().zip(decisions) {
            let decided = decision.and_then(|d| party_decision(d, party.of.as_ref(), &mut self.rate, row));
            match decided {
                Ok(cap) => {
                    party.admitted = true;
                    imposed = match (imposed, cap) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Err(e) => {
                    refusal.get_or_insert(e);
                }
            }
        }
        let Some(refusal) = refusal else { return Ok(imposed) };
        let releases = parties.iter_mut().filter(|p| p.admitted).map(|p| {
            p.admitted = false;
            let request = ReleaseRequest { id: row.call_id.clone(), limits: p.limits.clone() };
            let (name, ledger) = (&p.name, &p.ledger);
            async move {
                if let Err(e) = stub(ledger)?.release(&request).await {
                    // Its lease frees the slot later; the hold is charged after an hour unless
                    // a settlement comes, so the refused request still costs nothing.
                    console_error!("releasing call {} in {name} failed: {}", request.id, e.message);
                }
                Ok::<(), ApiError>(())
            }
        });
        join_each(releases).await;
        Err(refusal)
    }

    /// The request moves to a fallback `group`: each ledger that admitted it re-admits it
    /// there (the key's per-model limits and current scope apply); holds move with it.
    pub async fn enter_group(&mut self, group: &str, reservation: &Reservation) -> Result<(), ApiError> {
        let (row, key_hash) = (&self.row, &self.key_hash);
        let parties: Vec<&Party> = self.key.iter().chain(self.others.iter()).filter(|p| p.admitted).collect();
        let requests: Vec<AdmitRequest> = parties
            .iter()
            .map(|p| {
                let hash = if p.of.is_none() { key_hash.clone() } else { None };
                let mut request = reservation.admit_request(
                    row.call_id.clone(),
                    group.to_string(),
                    hash,
                    reservation.prices,
                    p.limits.clone(),
                );
                request.access_groups = access_groups_of(group);
                request
            })
            .collect();
        let decisions =
            join_each(parties.iter().zip(&requests).map(|(p, r)| async move { stub(&p.ledger)?.admit(r).await })).await;
        let mut refusal = None;
        for (party, decision) in parties.iter().zip(decisions) {
            if let Err(e) = decision.and_then(|d| party_decision(d, party.of.as_ref(), &mut self.rate, row)) {
                refusal.get_or_insert(e);
            }
        }
        if let Some(e) = refusal {
            return Err(e);
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
            of: None,
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
        let mut senders = Vec::new();
        // The key's settlement, with its spend log row.
        let key_request = self
            .key
            .as_ref()
            .map(|key| (key, SettleRequest { settlement: self.settlement(&key.limits, usage, cost), row: Some(row) }));
        // The other parties' settlements: their spend only (the row is the key's).
        let other_requests: Vec<(&Party, SettleRequest)> = self
            .others
            .iter()
            .map(|p| (p, SettleRequest { settlement: self.settlement(&p.limits, usage, cost), row: None }))
            .collect();
        let mut direct: Vec<(&Party, &SettleRequest)> = Vec::new();
        for (party, request) in
            key_request.iter().map(|(k, r)| (*k, r)).chain(other_requests.iter().map(|(p, r)| (*p, r)))
        {
            if party.admitted {
                direct.push((party, request));
            } else if let Some(sender) = settlements::enqueue(&self.env, &party.name, request.clone()) {
                senders.push(sender);
            }
        }
        let call_id = &self.row.call_id;
        let results = join_each(direct.iter().map(|(party, request)| async move {
            let result = settle_on(&party.ledger, request).await;
            if let Err(e) = &result {
                console_error!("settling call {call_id} in {} failed: {}", party.name, e.message);
            }
            result.ok()
        }))
        .await;
        for ((party, request), result) in direct.iter().zip(results) {
            if let (None, Some(result)) = (&party.of, result) {
                settlements::report_soft_budget(request, &result);
                settled.key_spend = Some(result.spend);
            }
        }
        match ctx {
            Some(ctx) => senders.into_iter().for_each(|sender| ctx.wait_until(sender)),
            None => {
                join_each(senders).await;
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

/// Runs `futures` at once; their outputs in order. (futures_util's `join_all` also carries
/// `FuturesOrdered` for long lists, several KB of wasm per use; a request joins a few.)
async fn join_each<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut running: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = running.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in running.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
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

/// The access groups the config puts `model` in: the key's ledger admits it when its scope
/// names one of them.
fn access_groups_of(model: &str) -> Vec<String> {
    embedded::config().map(|c| c.access_groups_of(model).into_iter().map(str::to_string).collect()).unwrap_or_default()
}

/// What the key's ledger decided: the `max_tokens` to impose, or the caller's error. The
/// rate figures are kept for the answer's headers either way.
fn key_decision(
    decision: Decision,
    rate_seen: &mut Option<RateInfo>,
    row: &SpendLogRow,
) -> Result<Option<u64>, ApiError> {
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
        Decision::ModelBudgetExceeded { model, committed, max_budget } => {
            Err(refusals::model_budget_exceeded(&row.api_key, row.key_alias.as_deref(), &model, committed, max_budget))
        }
    }
}

/// What one party's ledger decided: the key's as `key_decision`; another party's refusal names
/// it (LiteLLM's `Team=<id>`, `User=<id>`, `End User=<id>`).
fn party_decision(
    decision: Decision,
    of: Option<&(PartyKind, String)>,
    rate_seen: &mut Option<RateInfo>,
    row: &SpendLogRow,
) -> Result<Option<u64>, ApiError> {
    let Some((kind, id)) = of else { return key_decision(decision, rate_seen, row) };
    let label = format!("{}={id}", kind.label());
    match decision {
        Decision::Admitted { max_tokens, .. } => Ok(max_tokens),
        Decision::RateLimited { message, retry_after_ms, .. } => {
            Err(refusals::rate_limited(format!("{label}: {message}"), retry_after_ms))
        }
        Decision::BudgetExceeded { committed, max_budget } => {
            Err(refusals::party_budget_exceeded(&label, committed, max_budget))
        }
        Decision::Revoked { reason } => Err(refusals::party_blocked(&label, &reason, kind.unblock_path())),
        Decision::ModelNotAllowed { models } => Err(refusals::model_not_allowed(&models)),
        // Only a key's ledger holds per-model budgets.
        Decision::ModelBudgetExceeded { model, committed, max_budget } => {
            Err(refusals::model_budget_exceeded(&row.api_key, row.key_alias.as_deref(), &model, committed, max_budget))
        }
    }
}

/// Tells a party's ledger at once that it was blocked (`reason`), deleted, or unblocked (`None`).
pub async fn notify_party(env: &Env, kind: PartyKind, id: &str, reason: Option<&str>) -> Result<(), ApiError> {
    let stub = LedgerStub::open(env, &kind.ledger(id))?;
    stub.revoke(&messages::RevokeRequest { reason: reason.map(str::to_string), key_hash: None, scope: None }).await
}

/// A party's spend and budget period, as its ledger holds them.
pub async fn party_spend(
    env: &Env,
    kind: PartyKind,
    record: &crate::parties::PartyRecord,
) -> Result<crate::ledger::messages::LedgerInfo, ApiError> {
    let stub = LedgerStub::open(env, &kind.ledger(&record.id))?;
    stub.info(&messages::InfoRequest { limits: record.limits() }).await
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
