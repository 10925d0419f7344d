//! Performs the attempts of one request: spreading it over a model group's deployments,
//! retrying, cooling failing deployments down and falling back to other groups. The rules are
//! `routing`'s; cooldowns are shared through `objects::group_health`. In-flight counts,
//! latencies and usage per deployment (least-busy, latency-based and usage-based routing) are
//! each isolate's own view of its own traffic.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::time::Duration as StdDuration;

use serde_json::{Map, Value};
use worker::{AbortController, ByteStream, Delay};

use super::accounting::{Account, Reservation};
use super::credentials::{self, Credential};
use super::objects::group_health::{self, health_view};
use super::upstream::{self, within, Upstream};
use super::{now_ms, runtime_error, vars, Call};
use crate::config::{Deployment, GatewayConfig};
use crate::databricks::{self, Answer};
use crate::headers::{Attempts, Timing};
use crate::openai::ApiError;
use crate::refusals;
use crate::routing::{self, DeploymentStats, Failure, Unavailable};
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
/// caller `may_use`, and the key's ledger admits the request again in each.
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
) -> Result<Routed<'c>, ApiError> {
    let settings = &config.router;
    let deadline = settings.timeout_ms.map(|t| call.started_ms + t);
    // Pre-call checks use the typical estimate, not the budget's bound.
    let prompt_tokens_estimate = reservation.prompt_tokens_estimate;
    let mut queue: VecDeque<String> = VecDeque::from([group.to_string()]);
    let mut visited: Vec<String> = Vec::new();
    let (mut retries, mut fallbacks) = (0u32, 0u32);
    let mut last_error: Option<ApiError> = None;

    'groups: while let Some(current) = queue.pop_front() {
        if visited.contains(&current) {
            continue;
        }
        visited.push(current.clone());
        if current != group {
            if !may_use(&current) {
                continue;
            }
            fallbacks += 1;
            if let Err(error) = account.enter_group(&current, reservation).await {
                last_error = Some(error);
                continue;
            }
        }
        let all_members = config.group(&current);
        let shown = if current == group { display.to_string() } else { current.clone() };
        let mut tried: Vec<String> = Vec::new();
        // Deployments that answered 401 or 404: not tried again by this request.
        let mut broken: Vec<String> = Vec::new();
        for attempt in 0..=settings.num_retries {
            if deadline.is_some_and(|d| now_ms() >= d) {
                last_error = Some(databricks::timed_out(settings.timeout_ms.unwrap_or_default()));
                break 'groups;
            }
            let members: Vec<&Deployment> = all_members.iter().copied().filter(|d| !broken.contains(&d.id)).collect();
            if members.is_empty() {
                break;
            }
            let health = health_view(call.env, call.ctx, &current);
            let now = now_ms();
            let candidates = match routing::eligible(&members, &health, now, &tried, prompt_tokens_estimate, settings) {
                Ok(candidates) => candidates,
                Err(Unavailable::CoolingDown { retry_after_ms }) => {
                    last_error = Some(refusals::no_deployments(&current, retry_after_ms));
                    break;
                }
                Err(Unavailable::ContextWindow) => {
                    last_error = Some(context_window(&current));
                    push_front(&mut queue, settings.context_window_fallbacks_for(&current));
                    continue 'groups;
                }
            };
            let stats = |id: &str| STATS.with(|s| s.borrow().get(id).cloned().unwrap_or_default());
            let Some(deployment) = routing::choose(&candidates, settings.strategy, &stats, now, random()) else {
                break;
            };
            if attempt > 0 {
                retries += 1;
            }
            tried.push(deployment.id.clone());
            if let Err(error) =
                account.use_deployment(call.env, deployment, config.enforce_model_rate_limits, reservation).await
            {
                last_error = Some(error);
                continue;
            }
            let result = attempt_once(call, deployment, ask, &shown, deadline).await;
            match result {
                Ok((forwarded, bearer)) => {
                    account.answered_by(&current);
                    set_attempt_headers(call, retries, fallbacks);
                    return Ok(Routed { deployment, forwarded, bearer });
                }
                Err(error) => {
                    account.deployment_failed().await;
                    match routing::classify(error.status, &error.message) {
                        Failure::Final => {
                            set_attempt_headers(call, retries, fallbacks);
                            return Err(error);
                        }
                        Failure::ContextWindow => {
                            push_front(&mut queue, settings.context_window_fallbacks_for(&current));
                            last_error = Some(error);
                            continue 'groups;
                        }
                        Failure::Retry { cool_now, transient } => {
                            group_health::record_failure(
                                call.env,
                                call.ctx,
                                &current,
                                deployment,
                                cool_now,
                                all_members.len(),
                                settings,
                            );
                            if !transient {
                                broken.push(deployment.id.clone());
                            }
                            let wait = routing::backoff_ms(error.status, attempt + 1, error.retry_after_s);
                            last_error = Some(error);
                            if attempt < settings.num_retries && wait > 0 {
                                let left = deadline.map_or(wait, |d| d.saturating_sub(now_ms()));
                                Delay::from(StdDuration::from_millis(wait.min(left))).await;
                            }
                        }
                    }
                }
            }
        }
        if current == group {
            queue.extend(settings.fallbacks_for(&current).iter().cloned());
        }
    }
    set_attempt_headers(call, retries, fallbacks);
    Err(last_error.unwrap_or_else(|| refusals::no_deployments(group, 1000)))
}

fn push_front(queue: &mut VecDeque<String>, groups: &[String]) {
    for g in groups.iter().rev() {
        queue.push_front(g.clone());
    }
}

fn set_attempt_headers(call: &mut Call<'_>, retries: u32, fallbacks: u32) {
    call.headers.attempts = Some(Attempts { retries, fallbacks });
}

fn context_window(group: &str) -> ApiError {
    ApiError::invalid_request(
        format!("The request is too long for the context window of every deployment of `{group}`."),
        "messages",
    )
}

/// One attempt on one deployment: the answer, or the first bytes of the stream, within the
/// deployment's timeout (and what is left of the router's).
async fn attempt_once(
    call: &mut Call<'_>,
    deployment: &Deployment,
    ask: &Ask<'_>,
    shown: &str,
    deadline: Option<u64>,
) -> Result<(Forwarded, Secret), ApiError> {
    let api_base = vars::resolve(call.env, &deployment.api_base)?;
    let mut credential = credentials::for_deployment(call.env, deployment, &api_base).await?;
    call.log.deployment = Some(deployment.id.clone());
    call.headers.model_id = Some(deployment.id.clone());
    call.headers.api_base = Some(api_base.expose().to_string());
    let upstream = ask.wire.upstream_request(ask.body, &deployment.endpoint, ask.stream, ask.output_cap)?;
    let url = databricks::url(api_base.expose(), upstream.route);
    let timeout_ms = deadline.map_or(deployment.timeout_ms, |d| deployment.timeout_ms.min(d.saturating_sub(now_ms())));

    with_stats(&deployment.id, |s| s.in_flight += 1);
    let started = now_ms();
    let mut result = forward(call, &url, &credential, &upstream, ask, deployment, timeout_ms, shown).await;
    // An OAuth token Databricks refuses (expired early, rotated) is replaced once.
    if credential.is_oauth() && matches!(&result, Err(e) if e.status == 401 || e.status == 403) {
        if let Some(fresh) = credentials::refresh(&credential).await? {
            credential = fresh;
            result = forward(call, &url, &credential, &upstream, ask, deployment, timeout_ms, shown).await;
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
    call: &mut Call<'_>,
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
    let Upstream { mut response, controller } =
        upstream::post_json(url, token, &request.body, &request.headers, timeout_ms).await.inspect_err(|_| {
            call.log.upstream_ms = Some(now_ms().saturating_sub(upstream_started));
        })?;
    let status = response.status_code();
    call.log.upstream_status = Some(status);
    let remaining_ms = timeout_ms.saturating_sub(now_ms().saturating_sub(upstream_started));

    if !(200..300).contains(&status) {
        // The error body is read within what is left of the timeout.
        let body = upstream::body_within(remaining_ms, &mut response, controller).await;
        let mut error = databricks::upstream_error(status, &body, &[token.expose()]);
        error.retry_after_s = response.headers().get("retry-after").ok().flatten().and_then(|v| v.trim().parse().ok());
        set_durations(call, upstream_started);
        return Err(error);
    }

    if ask.stream {
        // The first bytes are awaited here, so that a stream failing before them can still be
        // retried elsewhere: nothing has reached the client yet.
        let mut body = response.stream().map_err(runtime_error)?;
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
        set_durations(call, upstream_started);
        return Ok(Forwarded::Stream { body, controller, first });
    }

    let body = match within(remaining_ms, response.bytes()).await {
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
    set_durations(call, upstream_started);
    ask.wire.answer(&deployment.endpoint, &body, shown).map(Forwarded::Answer)
}

/// Records the upstream time and adds LiteLLM's duration headers.
fn set_durations(call: &mut Call<'_>, upstream_started: u64) {
    let now = now_ms();
    let upstream_ms = now.saturating_sub(upstream_started);
    let total_ms = now.saturating_sub(call.started_ms);
    call.log.upstream_ms = Some(upstream_ms);
    call.headers.timing = Some(Timing { total_ms, upstream_ms });
}

fn with_stats(id: &str, f: impl FnOnce(&mut DeploymentStats)) {
    STATS.with(|s| f(s.borrow_mut().entry(id.to_string()).or_default()));
}

/// Uniform in [0, 1), from the platform's random source.
fn random() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
