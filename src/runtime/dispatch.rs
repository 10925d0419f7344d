//! Performs the attempts of one request: spreading it over a model group's deployments,
//! retrying, cooling failing deployments down and falling back to other groups, each step as
//! `routing::plan` decides; cooldowns are shared through `objects::group_health`. In-flight
//! counts, latencies and usage per deployment (least-busy, latency-based and usage-based
//! routing) are each isolate's own view of its own traffic.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration as StdDuration;

use serde_json::{Map, Value};
use worker::{AbortController, ByteStream, Context, Delay, Env};

use super::accounting::{Account, Reservation};
use super::credentials::{self, Credential};
use super::objects::group_health::{self, health_view};
use super::upstream::{self, within, Deadline, Upstream};
use super::{now_ms, vars, Call};
use crate::config::{Deployment, GatewayConfig};
use crate::databricks::{self, Answer};
use crate::headers::{Attempts, Timing};
use crate::openai::ApiError;
use crate::routing::plan::{Outcome, RoutePlan, Step, Strike, View};
use crate::routing::{DeploymentStats, Health};
use crate::secret::Secret;
use crate::wire::{UpstreamRequest, WireFormat};

thread_local! {
    /// Deployment id → what this isolate saw of it.
    static STATS: RefCell<HashMap<String, DeploymentStats>> = RefCell::new(HashMap::new());
}

/// What Databricks answered: a whole answer, or a stream whose first bytes arrived.
pub enum Forwarded {
    Answer(Answer),
    Stream { body: ByteStream, controller: AbortController, first: Vec<u8> },
}

/// A request routed to the deployment that answered it.
pub struct Routed<'c> {
    pub deployment: &'c Deployment,
    pub forwarded: Forwarded,
    pub bearer: Secret,
}

/// What routing did, whether or not a deployment answered: for the answer's headers and the
/// log line. The pipeline owns it and reads it once routing is over.
#[derive(Debug, Default)]
pub struct Trail {
    pub attempts: Attempts,
    /// The deployment of the last attempt, and its `api_base`.
    pub deployment: Option<String>,
    pub api_base: Option<String>,
    pub upstream_status: Option<u16>,
    pub upstream_ms: Option<u64>,
    /// Time to the answer (or the stream's first bytes), and the upstream's share of it.
    pub timing: Option<Timing>,
}

/// What is asked of Databricks: the client's body in its wire format (translated for each
/// attempt's deployment).
pub struct Ask<'a> {
    pub wire: &'a dyn WireFormat,
    pub body: &'a Map<String, Value>,
    pub stream: bool,
    /// A `max_tokens` a budget imposed, which no translation may raise.
    pub output_cap: Option<u64>,
}

/// Tries the group's deployments (and then its fallbacks) until one answers, within
/// `num_retries` retries per group and the router's overall timeout. `display` is the model
/// name answers carry when the group asked for answers. Fallbacks go only to groups the
/// caller `may_use`, and the key's ledger admits the request again in each. The policy is
/// `routing::plan`'s: this loop performs its steps.
#[allow(clippy::too_many_arguments)]
pub async fn route<'c>(
    call: &mut Call<'_>,
    config: &'c GatewayConfig,
    group: &str,
    display: &str,
    ask: &Ask<'_>,
    may_use: &dyn Fn(&str) -> bool,
    account: &mut Account,
    reservation: &Reservation,
    trail: &mut Trail,
) -> Result<Routed<'c>, ApiError> {
    let mut plan = RoutePlan::new(config, group, call.started_ms, reservation.prompt_tokens_estimate, may_use);
    loop {
        match plan.next(&mut Isolate { env: call.env, ctx: call.ctx }) {
            Step::Enter { group } => {
                let entered = account.enter_group(&group, reservation).await;
                plan.report(Outcome::Entered(entered));
            }
            Step::Attempt { group: current, deployment, .. } => {
                let admitted =
                    account.use_deployment(call.env, deployment, config.enforce_model_rate_limits, reservation).await;
                if let Err(error) = admitted {
                    plan.report(Outcome::Refused(error));
                    continue;
                }
                let shown = if current == group { display } else { &current };
                let attempted = attempt_once(call, trail, deployment, ask, shown, plan.deadline()).await;
                trail.attempts = Attempts { retries: plan.retries(), fallbacks: plan.fallbacks() };
                match attempted {
                    Ok((forwarded, bearer)) => {
                        account.answered_by(&current);
                        return Ok(Routed { deployment, forwarded, bearer });
                    }
                    Err(error) => {
                        account.deployment_failed().await;
                        if let Some(strike) = plan.report(Outcome::Failed(error)) {
                            let Strike { group, deployment, immediate, group_size } = strike;
                            group_health::record_failure(
                                call.env,
                                call.ctx,
                                &group,
                                deployment,
                                immediate,
                                group_size,
                                &config.router,
                            );
                        }
                    }
                }
            }
            Step::Wait { ms } => Delay::from(StdDuration::from_millis(ms)).await,
            Step::GiveUp(error) => {
                trail.attempts = Attempts { retries: plan.retries(), fallbacks: plan.fallbacks() };
                return Err(error);
            }
        }
    }
}

/// What the plan reads: the clock, this isolate's copy of the groups' health, its stats, and
/// the platform's random source.
struct Isolate<'a> {
    env: &'a Env,
    ctx: &'a Context,
}

impl View for Isolate<'_> {
    fn now(&self) -> u64 {
        now_ms()
    }

    fn health(&self, group: &str) -> Health {
        health_view(self.env, self.ctx, group)
    }

    fn stats(&self, deployment_id: &str) -> DeploymentStats {
        STATS.with(|s| s.borrow().get(deployment_id).cloned().unwrap_or_default())
    }

    fn random(&mut self) -> f64 {
        random()
    }
}

/// One attempt on one deployment: the answer, or the first bytes of the stream, within the
/// deployment's timeout (and what is left of the router's).
async fn attempt_once(
    call: &Call<'_>,
    trail: &mut Trail,
    deployment: &Deployment,
    ask: &Ask<'_>,
    shown: &str,
    deadline: Option<u64>,
) -> Result<(Forwarded, Secret), ApiError> {
    let api_base = vars::resolve(call.env, &deployment.api_base)?;
    let mut credential = credentials::for_deployment(call.env, deployment, &api_base).await?;
    trail.deployment = Some(deployment.id.clone());
    trail.api_base = Some(api_base.expose().to_string());
    let upstream = ask.wire.upstream_request(ask.body, &deployment.endpoint, ask.stream, ask.output_cap)?;
    let url = databricks::url(api_base.expose(), upstream.route);
    let timeout_ms = deadline.map_or(deployment.timeout_ms, |d| deployment.timeout_ms.min(d.saturating_sub(now_ms())));

    with_stats(&deployment.id, |s| s.in_flight += 1);
    let started = now_ms();
    let mut result =
        forward(trail, call.started_ms, &url, &credential, &upstream, ask, deployment, timeout_ms, shown).await;
    // An OAuth token Databricks refuses (expired early, rotated) is replaced once.
    if credential.is_oauth() && matches!(&result, Err(e) if e.status == 401 || e.status == 403) {
        if let Some(fresh) = credentials::refresh(&credential).await? {
            credential = fresh;
            result =
                forward(trail, call.started_ms, &url, &credential, &upstream, ask, deployment, timeout_ms, shown).await;
        }
    }
    with_stats(&deployment.id, |s| {
        if result.is_ok() {
            s.record_latency(now_ms().saturating_sub(started) as f64);
        }
        match &result {
            // A stream stays in flight until it ends (see `stream_ended`).
            Ok(Forwarded::Stream { .. }) => {}
            Ok(Forwarded::Answer(answer)) => {
                s.in_flight = s.in_flight.saturating_sub(1);
                s.record_usage(now_ms(), answer.usage.map_or(0, |u| u.total_tokens));
            }
            Err(_) => s.in_flight = s.in_flight.saturating_sub(1),
        }
    });
    result.map(|forwarded| (forwarded, credential.bearer))
}

/// A stream that a deployment was serving ended: it is no longer in flight, and its tokens
/// count in the deployment's usage this minute.
pub fn stream_ended(deployment_id: &str, tokens: u64) {
    with_stats(deployment_id, |s| {
        s.in_flight = s.in_flight.saturating_sub(1);
        s.record_usage(now_ms(), tokens);
    });
}

/// Sends the request and reads the answer (or the start of the stream) within `timeout_ms`.
#[allow(clippy::too_many_arguments)]
async fn forward(
    trail: &mut Trail,
    started_ms: u64,
    url: &str,
    credential: &Credential,
    request: &UpstreamRequest,
    ask: &Ask<'_>,
    deployment: &Deployment,
    timeout_ms: u64,
    shown: &str,
) -> Result<Forwarded, ApiError> {
    let token = &credential.bearer;
    let upstream_started = now_ms();
    let mut deadline = Deadline::new(timeout_ms);
    let upstream =
        upstream::post_json(url, token, &request.body, &request.headers, &mut deadline).await.inspect_err(|_| {
            trail.upstream_ms = Some(now_ms().saturating_sub(upstream_started));
        })?;
    let status = upstream.status();
    trail.upstream_status = Some(status);
    let remaining_ms = timeout_ms.saturating_sub(now_ms().saturating_sub(upstream_started));

    if !(200..300).contains(&status) {
        // The error body is read within what is left of the timeout.
        let retry_after_s = upstream.header("retry-after").and_then(|v| v.trim().parse().ok());
        let body = upstream::body_within(&mut deadline, upstream).await;
        let mut error = databricks::upstream_error(status, &body, &[token.expose()]);
        error.retry_after_s = retry_after_s;
        set_durations(trail, started_ms, upstream_started);
        return Err(error);
    }
    let Upstream { response, controller } = upstream;

    if ask.stream {
        // The first bytes are awaited here, so that a stream failing before them can still be
        // retried elsewhere: nothing has reached the client yet.
        let Some(mut body) = upstream::byte_stream(&response) else {
            return Err(ApiError::bad_gateway("Databricks ended the stream before sending anything"));
        };
        let first_timeout = deployment.stream_timeout_ms.min(remaining_ms.max(1));
        let first = match within(first_timeout, futures_util::StreamExt::next(&mut body)).await {
            Some(Some(Ok(bytes))) => bytes,
            Some(Some(Err(e))) => return Err(ApiError::bad_gateway(format!("The Databricks stream broke: {e}"))),
            Some(None) => return Err(ApiError::bad_gateway("Databricks ended the stream before sending anything")),
            None => {
                controller.abort();
                return Err(databricks::timed_out(first_timeout));
            }
        };
        set_durations(trail, started_ms, upstream_started);
        return Ok(Forwarded::Stream { body, controller, first });
    }

    let body = match deadline.within(upstream::bytes(&response)).await {
        Some(Ok(body)) => body,
        Some(Err(e)) => {
            return Err(ApiError::bad_gateway(format!(
                "The connection to Databricks broke while reading the answer: {e}"
            )))
        }
        None => {
            controller.abort();
            return Err(databricks::timed_out(timeout_ms));
        }
    };
    set_durations(trail, started_ms, upstream_started);
    ask.wire.answer(&deployment.endpoint, &body, shown).map(Forwarded::Answer)
}

/// Records the upstream time and adds LiteLLM's duration headers.
fn set_durations(trail: &mut Trail, started_ms: u64, upstream_started: u64) {
    let now = now_ms();
    let upstream_ms = now.saturating_sub(upstream_started);
    let total_ms = now.saturating_sub(started_ms);
    trail.upstream_ms = Some(upstream_ms);
    trail.timing = Some(Timing { total_ms, upstream_ms });
}

fn with_stats(id: &str, f: impl FnOnce(&mut DeploymentStats)) {
    STATS.with(|s| f(s.borrow_mut().entry(id.to_string()).or_default()));
}

/// Uniform in [0, 1), from the platform's random source (the isolate's pool of it).
fn random() -> f64 {
    let mut bytes = [0u8; 8];
    if crate::ids::random_fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
