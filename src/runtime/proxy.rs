//! The handler of the proxied endpoints (chat, completions, embeddings): the order of one
//! proxied request, step by step.

use futures_channel::mpsc;
use futures_util::StreamExt;
use worker::{AbortController, ByteStream, Headers, Request, Response};

use super::accounting::{self, Account, Outcome, Reservation};
use super::dispatch::{self, Ask, Forwarded, Routed};
use super::upstream::within;
use super::{bytes_response, now_ms, read_body, runtime_error, tokens, unknown_model, Call, Caller};
use crate::config::{Deployment, GatewayConfig};
use crate::databricks::{self, Answer};
use crate::embedded;
use crate::log::RequestLog;
use crate::openai::{self, ApiError, Kind, ProxyRequest, Usage};
use crate::pricing;
use crate::prompt::{self, PromptTally};
use crate::stream::ChatStreamRelay;

/// `POST /chat/completions`, `/completions` or `/embeddings` for an authenticated caller:
/// parse → resolve the model (the key's aliases and allowed models) → admit (limits, budget)
/// → route (pick a deployment, retry, cool down, fall back) → relay the answer or stream →
/// settle the usage (on every path) → log.
pub async fn proxy(kind: Kind, mut req: Request, call: &mut Call<'_>, caller: Caller) -> Result<Response, ApiError> {
    let bytes = read_body(&mut req).await?;
    let ProxyRequest { model, stream, mut body, base64, include_usage, .. } = openai::parse_request(kind, &bytes)?;
    drop(bytes);
    if kind == Kind::Embedding {
        // Token ids (LangChain's default) become their text, which the prompt tally then counts.
        tokens::decode_token_input(call.env, &mut body).await?;
    }

    let config = embedded::config().map_err(ApiError::internal)?;
    let group = match &caller {
        Caller::Master => model.clone(),
        Caller::Key(record) => record.resolve_model(&model)?,
    };
    if config.group(&group).is_empty() {
        return Err(unknown_model(&model));
    }
    call.log.model = Some(group.clone());
    call.log.stream = Some(stream);
    call.headers.push(("x-litellm-model-group", group.clone()));
    call.log.dropped_params = databricks::drop_params(kind, &mut body, config.drop_params);

    // Fallbacks go only to groups the key may use; the reservation covers every deployment
    // that may serve (the dearest prices and chat template among them).
    let may_use = |g: &str| match &caller {
        Caller::Master => true,
        Caller::Key(record) => record.may_use_group(g),
    };
    let servable = servable(config, &group, &may_use);
    let tally = PromptTally::of(kind, &body);
    let max_tokens = servable
        .iter()
        .map(|d| databricks::upstream_max_tokens(kind, &body, &d.endpoint))
        .reduce(|a, b| a.zip(b).map(|(a, b)| a.max(b)))
        .flatten();
    let reservation = Reservation::new(&servable, &tally, max_tokens, prompt::choices(&body));
    let mut account = Account::open(call, &caller, &group, stream)?;
    let output_cap = account.admit(call, &reservation).await?;
    if let Some(imposed) = output_cap {
        body.remove("max_completion_tokens");
        body.insert("max_tokens".into(), imposed.into());
    }

    let ask = Ask { kind, body: &body, stream, base64, output_cap };
    let routed = dispatch::route(call, config, &group, &model, &ask, &may_use, &mut account, &reservation).await;
    drop(body);
    match routed {
        Err(error) => {
            accounting::settle_failed(account, error.status, call).await;
            // Routing already retried and fell back: a client retry would multiply that.
            Err(error.after_retries())
        }
        Ok(Routed { deployment, forwarded: Forwarded::Stream { body, controller, first }, bearer }) => {
            let prompt_estimate = reservation.prompt_tokens_estimate;
            let relay = ChatStreamRelay::new(&model, vec![bearer], include_usage);
            let pump = StreamPump::new(body, controller, call, relay, deployment, account, prompt_estimate, first);
            relay_stream(pump, call)
        }
        Ok(Routed { forwarded: Forwarded::Answer(Answer { bytes, usage, id }), .. }) => {
            call.log.set_usage(usage);
            let outcome = Outcome { usage, estimated: false, status: 200, response_id: id };
            let cost = account.cost(&outcome);
            accounting::log_cost(&mut call.log, account.prices(), cost);
            call.headers.push(("x-litellm-response-cost", pricing::format_usd(cost)));
            if account.settles_first() {
                if let Some(spend) = account.settle(outcome).await {
                    call.headers.push(("x-litellm-key-spend", pricing::format_usd(spend)));
                }
            } else if !account.has_no_ledger() {
                call.ctx.wait_until(async move {
                    account.settle(outcome).await;
                });
            }
            bytes_response(200, bytes)
        }
    }
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
fn relay_stream(mut pump: StreamPump, call: &mut Call<'_>) -> Result<Response, ApiError> {
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
    Response::from_stream(stream).map(|r| r.with_headers(headers)).map_err(runtime_error)
}

/// Moves a stream from Databricks to the client, one upstream read at a time, then settles it.
struct StreamPump {
    body: ByteStream,
    relay: ChatStreamRelay,
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
}

impl StreamPump {
    #[allow(clippy::too_many_arguments)]
    fn new(
        body: ByteStream,
        controller: AbortController,
        call: &Call<'_>,
        relay: ChatStreamRelay,
        deployment: &Deployment,
        account: Account,
        prompt_estimate: u64,
        first: Vec<u8>,
    ) -> Self {
        StreamPump {
            first: Some(first),
            body,
            relay,
            idle_ms: deployment.stream_timeout_ms,
            controller: Some(controller),
            account: Some(account),
            prompt_estimate,
            log: RequestLog::default(),
            started_ms: call.started_ms,
        }
    }

    async fn run(mut self, to_client: mpsc::UnboundedSender<Vec<u8>>) {
        while !self.relay.is_closed() {
            let read = match self.first.take() {
                Some(first) => Some(Some(Ok(first))),
                None => within(self.idle_ms, self.body.next()).await,
            };
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
    }

    /// The stream is over: stop the upstream if it is still going, settle, and log (once).
    async fn end(&mut self) {
        let Some(account) = self.account.take() else { return };
        if let Some(controller) = self.controller.take() {
            controller.abort();
        }
        // Databricks' usage is cumulative: the last one seen is what it produced. A stream cut
        // before any usage is charged by estimate (about four characters a token).
        let (usage, estimated) = match self.relay.usage() {
            Some(usage) => (usage, false),
            None => {
                let prompt_tokens = self.prompt_estimate;
                let completion_tokens = self.relay.generated_chars().div_ceil(4);
                (
                    Usage {
                        prompt_tokens,
                        completion_tokens,
                        total_tokens: prompt_tokens.saturating_add(completion_tokens),
                    },
                    true,
                )
            }
        };
        let outcome = Outcome {
            usage: Some(usage),
            estimated,
            status: self.relay.error().map_or(200, |e| e.status),
            response_id: self.relay.id().map(str::to_string),
        };
        accounting::log_cost(&mut self.log, account.prices(), account.cost(&outcome));
        account.settle(outcome).await;
        if let Some(deployment) = &self.log.deployment {
            dispatch::stream_ended(deployment, usage.total_tokens);
        }

        self.log.total_ms = now_ms().saturating_sub(self.started_ms);
        self.log.set_usage(Some(usage));
        self.log.estimated = estimated.then_some(true);
        self.log.chunks = Some(self.relay.chunks());
        if let Some(error) = self.relay.error() {
            self.log.error_type = Some(error.kind.as_str());
        }
        worker::console_log!("{}", self.log.to_line());
    }
}
