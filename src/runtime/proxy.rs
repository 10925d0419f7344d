//! The pipeline of a proxied request (chat, completions, embeddings today), written once for
//! every wire format. Each step returns what it decided; the answer's headers and the log
//! line are set here from those results, and nowhere else:
//!
//! 1. parse: the wire format reads the body (`wire`, `openai`)
//! 2. resolve: the model group the caller may use, and every deployment that may serve it
//!    (`keys`, `config`)
//! 3. admit: the key's limits and budget hold the request (`accounting`, `ledger`)
//! 4. route and forward: deployments tried, retried, cooled down, fallen back (`dispatch`,
//!    `routing`, `upstream`)
//! 5. relay: the answer, or the stream chunk by chunk (`wire`, `stream`)
//! 6. settle: the real usage replaces the hold, on every path (`accounting`, `settlements`)
//! 7. log: one line (`log`)

use futures_channel::mpsc;
use futures_util::StreamExt;
use worker::{web_sys, AbortController, ByteStream, Headers, Response};

use super::accounting::{self, Account, Outcome, Reservation};
use super::dispatch::{self, Ask, Forwarded, Routed, Trail};
use super::upstream::within;
use super::{
    bytes_response, partystore, read_body, runtime_error, tokens, unknown_model, write_log, Call, Caller, Reply,
};
use crate::attribution::Attribution;
use crate::config::{Deployment, GatewayConfig};
use crate::databricks::Answer;
use crate::embedded;
use crate::log::RequestLog;
use crate::openai::{ApiError, ProxyRequest, Usage};
use crate::wire::{StreamRelay, WireFormat};

/// Serves one request of `wire`'s format for an authenticated caller.
pub async fn proxy(
    wire: &mut dyn WireFormat,
    req: web_sys::Request,
    call: &mut Call<'_>,
    caller: Caller,
) -> Result<Reply, ApiError> {
    // 1. Parse.
    let config = embedded::config().map_err(ApiError::internal)?;
    let headers = req.headers();
    wire.read_headers(&|name: &str| headers.get(name).ok().flatten());
    let bytes = read_body(&req).await?;
    let ProxyRequest { model, stream, mut body, .. } = wire.parse(&bytes)?;
    drop(bytes);
    let attribution = Attribution::of(&body)?;
    if wire.takes_token_ids() {
        // Token ids (LangChain's default for embeddings) become their text, which the prompt
        // tally then counts.
        tokens::decode_token_input(call.env, &mut body).await?;
    }
    call.log.stream = Some(stream);
    call.log.dropped_params = wire.drop_params(&mut body, config.drop_params);

    // 2. Resolve.
    let resolved = resolve(config, &caller, &model)?;
    call.log.model = Some(resolved.group.clone());
    call.headers.model_group = Some(resolved.group.clone());
    let max_tokens = resolved
        .servable
        .iter()
        .map(|d| wire.max_output_tokens(&body, &d.endpoint))
        .reduce(|a, b| a.zip(b).map(|(a, b)| a.max(b)))
        .flatten();
    let reservation = Reservation::new(&resolved.servable, &wire.tally(&body), max_tokens, wire.choices(&body));

    // 3. Admit: the key's team, user and customer too, when they have records.
    let drawn = partystore::drawn_by(call.env, &caller, attribution.end_user.as_deref()).await?;
    partystore::check_models(&drawn, &resolved.group, &config.access_groups)?;
    let party_models: Vec<Vec<String>> =
        drawn.iter().map(|d| d.record.models.clone()).filter(|m| !m.is_empty()).collect();
    let mut account = Account::open(call, &caller, &resolved.group, stream, attribution, drawn)?;
    let admitted = account.admit(&reservation).await;
    call.headers.rate = account.rate();
    let output_cap = admitted?;
    if let Some(cap) = output_cap {
        wire.impose_output_cap(&mut body, cap);
    }

    // 4. Route and forward.
    let ask = Ask { wire: &*wire, body: &body, stream, output_cap };
    let groups = &config.access_groups;
    let may_use =
        |g: &str| caller.may_use_group(g, groups) && party_models.iter().all(|m| crate::access::allows(m, g, groups));
    let mut trail = Trail::default();
    let routed =
        dispatch::route(call, config, &resolved.group, &model, &ask, &may_use, &mut account, &reservation, &mut trail)
            .await;
    drop(body);
    call.headers.attempts = Some(trail.attempts);
    call.headers.model_id = trail.deployment.clone();
    call.headers.api_base = trail.api_base;
    call.headers.timing = trail.timing;
    call.log.deployment = trail.deployment;
    call.log.upstream_status = trail.upstream_status;
    call.log.upstream_ms = trail.upstream_ms;
    call.log.left_out = wire.left_out();
    match routed {
        Err(error) => {
            // 6. Settle: nothing billable, but the hold is released.
            account.settle(Outcome::failed(error.status), Some(call.ctx)).await;
            // Routing already retried and fell back: a client retry would multiply that.
            Err(error.after_retries())
        }
        // 5–7 for a stream: relayed, then settled and logged by its pump when it ends.
        Ok(Routed { deployment, forwarded: Forwarded::Stream { body, controller, first }, bearer }) => {
            let relay = wire.relay(&deployment.endpoint, &model, vec![bearer]);
            let pump = StreamPump::new(body, controller, call, relay, deployment, account, &reservation, first);
            relay_stream(pump, call)
        }
        Ok(Routed { forwarded: Forwarded::Answer(Answer { bytes, usage, id }), .. }) => {
            // 6. Settle, before the answer goes out.
            let outcome = Outcome { usage, estimated: false, status: 200, response_id: id };
            let prices = account.prices();
            let settled = account.settle(outcome, Some(call.ctx)).await;
            // 7. Log (written when the answer leaves, by `fetch`).
            call.log.set_usage(usage);
            accounting::log_cost(&mut call.log, prices, settled.cost);
            call.headers.response_cost = Some(settled.cost);
            call.headers.key_spend = settled.key_spend;
            // 5. Relay.
            Ok(bytes_response(200, bytes))
        }
    }
}

/// The model group a request is for, and the deployments that may end up serving it.
pub(super) struct Resolved<'c> {
    pub(super) group: String,
    /// The group's deployments and those of the fallbacks the caller may use: the
    /// reservation covers the dearest prices and chat template among them.
    servable: Vec<&'c Deployment>,
}

/// Resolves the model the client named (a key's alias, its allowed models) to a group.
pub(super) fn resolve<'c>(config: &'c GatewayConfig, caller: &Caller, model: &str) -> Result<Resolved<'c>, ApiError> {
    let group = match caller {
        Caller::Master => model.to_string(),
        Caller::Key(record) => record.resolve_model(model, &config.access_groups)?,
    };
    if config.group(&group).is_empty() {
        return Err(unknown_model(model));
    }
    let servable = servable(config, &group, &|g: &str| caller.may_use_group(g, &config.access_groups));
    Ok(Resolved { group, servable })
}

/// The deployments that may end up serving a request for `group`: its own and those of the
/// fallbacks the caller may use.
fn servable<'c>(config: &'c GatewayConfig, group: &str, may_use: &dyn Fn(&str) -> bool) -> Vec<&'c Deployment> {
    let settings = &config.router;
    let mut groups = vec![group];
    let mut i = 0;
    while let Some(&current) = groups.get(i) {
        // The route tries the group's fallbacks, and any group's context-window fallbacks.
        let own = if i == 0 { settings.fallbacks_for(current) } else { &[] };
        for next in own.iter().chain(settings.context_window_fallbacks_for(current)) {
            if may_use(next) && !groups.contains(&next.as_str()) {
                groups.push(next);
            }
        }
        i += 1;
    }
    groups.iter().flat_map(|g| config.group(g)).collect()
}

/// Answers with the upstream's SSE stream, normalised chunk by chunk as it arrives.
///
/// The upstream is read by a pump that runs under `wait_until`, not by the response body:
/// when a client hangs up, workerd stops pulling the response stream, so only a pump outside
/// it can see the stream to its end, settle its usage and log it. The pump hands chunks over
/// an unbounded channel, so it never waits on a slow or departed client; an answer is a few
/// kilobytes, so the buffer stays small.
fn relay_stream(mut pump: StreamPump, call: &mut Call<'_>) -> Result<Reply, ApiError> {
    call.log_deferred = true;
    pump.log = std::mem::take(&mut call.log);
    pump.log.status = 200;
    let (to_client, from_pump) = mpsc::unbounded::<Vec<u8>>();
    call.ctx.wait_until(pump.run(to_client));
    let headers = Headers::new();
    headers.set("content-type", "text/event-stream").map_err(runtime_error)?;
    // no-transform: a compressed event stream would be buffered, not streamed.
    headers.set("cache-control", "no-cache, no-transform").map_err(runtime_error)?;
    let stream = from_pump.map(Ok::<Vec<u8>, worker::Error>);
    Response::from_stream(stream).map(|r| r.with_headers(headers).into()).map_err(runtime_error)
}

/// How long a stream that ended well may take to end its body after `[DONE]` before it is
/// aborted.
const UPSTREAM_END_MS: u64 = 1_000;

/// Moves a stream from Databricks to the client, one upstream read at a time, then settles it.
struct StreamPump {
    body: ByteStream,
    relay: Box<dyn StreamRelay>,
    /// The longest gap allowed between two upstream reads.
    idle_ms: u64,
    controller: Option<AbortController>,
    account: Option<Account>,
    /// The prompt's estimated tokens: charged when a stream is cut before any usage.
    prompt_estimate: u64,
    /// The bytes read before answering (so that a stream failing before them was retried).
    first: Option<Vec<u8>>,
    log: RequestLog,
    started_ms: u64,
    /// The reports batch's sender, when the settlement handed it here: run after the answer.
    report: Option<futures_util::future::LocalBoxFuture<'static, ()>>,
}

impl StreamPump {
    #[allow(clippy::too_many_arguments)]
    fn new(
        body: ByteStream,
        controller: AbortController,
        call: &Call<'_>,
        relay: Box<dyn StreamRelay>,
        deployment: &Deployment,
        account: Account,
        reservation: &Reservation,
        first: Vec<u8>,
    ) -> Self {
        StreamPump {
            first: Some(first),
            body,
            relay,
            idle_ms: deployment.stream_timeout_ms,
            controller: Some(controller),
            account: Some(account),
            prompt_estimate: reservation.prompt_tokens_estimate,
            log: RequestLog::default(),
            started_ms: call.started_ms,
            report: None,
        }
    }

    async fn run(mut self, to_client: mpsc::UnboundedSender<Vec<u8>>) {
        let mut upstream_ended = false;
        while !self.relay.is_closed() {
            let read = match self.first.take() {
                Some(first) => Some(Some(Ok(first))),
                None => within(self.idle_ms, self.body.next()).await,
            };
            upstream_ended = matches!(read, Some(None));
            let out = match read {
                Some(Some(Ok(bytes))) => self.relay.feed(&bytes),
                Some(Some(Err(e))) => {
                    self.relay.fail(ApiError::bad_gateway(format!("The Databricks stream broke: {e}")))
                }
                Some(None) => self.relay.finish(),
                None => self.relay.fail(ApiError::gateway_timeout(format!(
                    "Databricks sent nothing for {} s (stream_timeout); the stream was cut.",
                    self.idle_ms as f64 / 1000.0
                ))),
            };
            if self.relay.is_closed() {
                // Settle before the last bytes go out: a client that sends its next request
                // on `[DONE]` finds its slot and budget already freed.
                self.end().await;
            }
            if !out.is_empty() && to_client.unbounded_send(out).is_err() {
                // The response stream is gone: nobody reads what Databricks still produces.
                self.log.client_disconnected = Some(true);
                break;
            }
        }
        to_client.close_channel();
        self.end().await;
        if let Some(controller) = self.controller.take() {
            // A stream that ended well ends its body right after `[DONE]`: read to its end, the
            // upstream needs no abort (an exception built, the connection closed, not reused).
            let ended_well = self.relay.error().is_none() && self.log.client_disconnected.is_none();
            let running = match (upstream_ended, ended_well) {
                (true, _) => false,
                (false, true) => !self.upstream_ends().await,
                (false, false) => true,
            };
            if running {
                controller.abort();
            }
        }
        if let Some(report) = self.report.take() {
            report.await;
        }
    }

    /// Whether the upstream's body ends within a moment (a few reads), what is left dropped.
    async fn upstream_ends(&mut self) -> bool {
        for _ in 0..4 {
            match within(UPSTREAM_END_MS, self.body.next()).await {
                Some(None) => return true,
                Some(Some(Ok(_))) => {}
                Some(Some(Err(_))) | None => return false,
            }
        }
        false
    }

    /// The stream is over: settle, and log (once). The upstream, if still going, is stopped
    /// once the client has its last bytes (`run`).
    async fn end(&mut self) {
        let Some(account) = self.account.take() else { return };
        // Databricks' usage is cumulative: the last one seen is what it produced. A stream cut
        // before any usage is charged by estimate (about four characters a token).
        let (usage, estimated) = match self.relay.usage() {
            Some(usage) => (usage, false),
            None => (Usage::plain(self.prompt_estimate, self.relay.generated_chars().div_ceil(4)), true),
        };
        let outcome = Outcome {
            usage: Some(usage),
            estimated,
            status: self.relay.error().map_or(200, |e| e.status),
            response_id: self.relay.id().map(str::to_string),
        };
        let prices = account.prices();
        let mut settled = account.settle(outcome, None).await;
        self.report = settled.report.take();
        if let Some(deployment) = &self.log.deployment {
            dispatch::stream_ended(deployment, usage.total_tokens);
        }

        accounting::log_cost(&mut self.log, prices, settled.cost);
        self.log.set_usage(Some(usage));
        self.log.estimated = estimated.then_some(true);
        self.log.chunks = Some(self.relay.chunks());
        if let Some(error) = self.relay.error() {
            self.log.error_type = Some(error.kind.as_str());
        }
        write_log(&mut self.log, self.started_ms);
    }
}
