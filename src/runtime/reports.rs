//! The spend reports at run time: each settled request's event goes to the isolate's batch for
//! the `Reports` object (and, when an `ANALYTICS` dataset is bound, one Analytics Engine data
//! point), and the report endpoints read the object.
//!
//! - `GET /global/spend/report?start_date=&end_date=&group_by=team|customer|api_key`
//! - `GET /global/spend/keys?limit=`, `GET /global/spend/models?limit=` (the last 30 days)
//! - `GET /spend/tags?start_date=&end_date=`
//!
//! The master key reads everything; a virtual key reads only its own key's rows.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::thread::LocalKey;

use serde_json::{json, Value};
use worker::{console_error, AnalyticsEngineDataPointBuilder, AnalyticsEngineDataset, Context, Env, Request};

use super::objects::reports::ReportsStub;
use super::settlements::{self, Queues, Sink};
use super::{now_ms, Call, Caller};
use crate::analytics::DataPoint;
use crate::endpoints::{self, Endpoint};
use crate::keys;
use crate::openai::ApiError;
use crate::reports::{self, GroupBy, ReportEvent};

const ANALYTICS_BINDING: &str = "ANALYTICS";
/// The queue's name (there is one reports object).
const REPORTS_QUEUE: &str = "reports";
/// `/global/spend/models` answers this many models unless `limit` says otherwise.
const DEFAULT_MODELS_LIMIT: usize = 10;
/// The longest range `/global/spend/report` takes (LiteLLM's).
const MAX_RANGE_DAYS: u64 = 366;

/// Report events, batched for the reports object.
struct ReportEvents;

thread_local! {
    static EVENTS: RefCell<Queues<ReportEvent>> = RefCell::new(HashMap::new());
    /// The worker has no `ANALYTICS` dataset bound.
    static ANALYTICS_UNBOUND: Cell<bool> = const { Cell::new(false) };
}

impl Sink for ReportEvents {
    type Item = ReportEvent;
    const MAX_BATCH: usize = 256;
    /// Reports are read seconds later, not by the next request: gathering a quarter of a
    /// second turns one Durable Object call per request into one per isolate per 250 ms.
    const GATHER_MS: u64 = 250;

    fn queues() -> &'static LocalKey<RefCell<Queues<ReportEvent>>> {
        &EVENTS
    }

    async fn send(env: &Env, _object: &str, batch: &[ReportEvent]) -> Result<(), String> {
        ReportsStub::open(env).map_err(|e| e.message)?.record(batch).await.map(|_| ()).map_err(|e| e.message)
    }

    fn id(item: &ReportEvent) -> &str {
        &item.call_id
    }
}

/// Records a settled request: its Analytics Engine data point, if a dataset is bound, and its
/// event in the isolate's batch. Returns the batch's sender when this request must start it:
/// run in `ctx`'s `waitUntil` when there is one, else handed back to be awaited once the
/// answer is out (a stream's pump).
#[must_use]
pub fn record(env: &Env, ctx: Option<&Context>, event: ReportEvent) -> Option<impl Future<Output = ()> + 'static> {
    write_data_point(env, &event);
    let sender = settlements::enqueue_to::<ReportEvents>(env, REPORTS_QUEUE, event)?;
    match ctx {
        Some(ctx) => {
            ctx.wait_until(sender);
            None
        }
        None => Some(sender),
    }
}

fn write_data_point(env: &Env, event: &ReportEvent) {
    // An isolate's bindings do not change: one without the dataset looks once, not per request.
    if ANALYTICS_UNBOUND.get() {
        return;
    }
    let Ok(dataset) = env.get_binding::<AnalyticsEngineDataset>(ANALYTICS_BINDING) else {
        ANALYTICS_UNBOUND.set(true);
        return;
    };
    let point = DataPoint::of(event);
    let blobs: Vec<&str> = point.blobs.iter().map(String::as_str).collect();
    let built = AnalyticsEngineDataPointBuilder::new()
        .indexes([point.index.as_str()])
        .blobs(blobs)
        .doubles(point.doubles)
        .build();
    if let Err(e) = dataset.write_data_point(&built) {
        console_error!("writing the Analytics Engine data point of {} failed: {e}", event.call_id);
    }
}

/// Serves a report route.
pub async fn serve(route: &Endpoint, req: &Request, call: &Call<'_>, caller: &Caller) -> Result<Value, ApiError> {
    let url = req.inner().url();
    let param = |name: &str| endpoints::query_param(&url, name).filter(|v| !v.is_empty());
    // A virtual key sees only its own rows; asking for another key's is refused.
    let own_key = match caller {
        Caller::Master => None,
        Caller::Key(record) => Some(record.key_hash.clone()),
    };
    let asked_key = param("api_key").map(|k| keys::token_of(&k));
    if let (Some(own), Some(asked)) = (&own_key, &asked_key) {
        if own != asked {
            return Err(ApiError::forbidden("A key may only read its own spend; use the master key for others."));
        }
    }
    let mut request = json!({ "api_key": own_key.or(asked_key) });
    let path = match route {
        Endpoint::GlobalSpendReport => {
            let start = required_day(param("start_date"), "start_date")?;
            let end = required_day(param("end_date"), "end_date")?;
            if end.1 < start.1 {
                return Err(ApiError::invalid_request("start_date must be on or before end_date", "start_date"));
            }
            if end.1 - start.1 > MAX_RANGE_DAYS * reports::DAY_MS {
                let message = format!("Date range too large; maximum is {MAX_RANGE_DAYS} days");
                return Err(ApiError::invalid_request(message, "end_date"));
            }
            let group_by = match param("group_by") {
                None => GroupBy::Team,
                Some(g) => GroupBy::parse(&g).ok_or_else(|| {
                    ApiError::invalid_request("Invalid `group_by`: use team, customer or api_key", "group_by")
                })?,
            };
            request["start"] = start.0.into();
            request["end"] = end.0.into();
            request["group_by"] = group_by.as_str().into();
            request["end_user"] = param("customer_id").into();
            request["team_id"] = param("team_id").into();
            request["user_id"] = param("internal_user_id").into();
            "/report"
        }
        Endpoint::GlobalSpendKeys | Endpoint::GlobalSpendModels => {
            let (start, end) = reports::last_30_days(now_ms());
            request["start"] = start.into();
            request["end"] = end.into();
            let default = if *route == Endpoint::GlobalSpendModels { Some(DEFAULT_MODELS_LIMIT) } else { None };
            request["limit"] = limit(param("limit"))?.or(default).into();
            if *route == Endpoint::GlobalSpendKeys {
                "/keys"
            } else {
                "/models"
            }
        }
        Endpoint::SpendTags => {
            request["start"] = optional_day(param("start_date"), "start_date")?.into();
            request["end"] = optional_day(param("end_date"), "end_date")?.into();
            "/tags"
        }
        _ => return Err(ApiError::not_found("Unknown report")),
    };
    ReportsStub::open(call.env)?.report(path, &request).await
}

fn bad_day(field: &str, value: &str) -> ApiError {
    ApiError::invalid_request(format!("{field} must be a YYYY-MM-DD date, got {value:?}"), field)
}

/// A required day and its start (Unix ms).
fn required_day(value: Option<String>, field: &str) -> Result<(String, u64), ApiError> {
    let Some(value) = value else {
        return Err(ApiError::invalid_request("Please provide start_date and end_date", field));
    };
    let ms = reports::parse_day(&value).ok_or_else(|| bad_day(field, &value))?;
    Ok((value, ms))
}

fn optional_day(value: Option<String>, field: &str) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if reports::parse_day(&v).is_some() => Ok(Some(v)),
        Some(v) => Err(bad_day(field, &v)),
    }
}

fn limit(value: Option<String>) -> Result<Option<usize>, ApiError> {
    value
        .map(|v| {
            v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                ApiError::invalid_request(
                    format!("Invalid limit: {v:?}, must be a whole number of at least 1"),
                    "limit",
                )
            })
        })
        .transpose()
}
