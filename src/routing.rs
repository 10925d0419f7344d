//! The router's rules: which deployments of a group may take a request (cooldowns, context
//! windows, `order`), which one does (the routing strategy), what a failure means (retry,
//! cool down, fall back) and how long to wait before the next attempt; [`plan`] puts them
//! together into one request's way through the router.

pub mod plan;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Deployment, RouterSettings, Strategy};
use crate::fields::{Fields, FromJson};

const MINUTE_MS: u64 = 60_000;
/// The longest wait between two attempts, whatever `retry-after` asks.
pub const MAX_BACKOFF_MS: u64 = 10_000;
const BACKOFF_BASE_MS: u64 = 250;
/// Weight of the newest latency in the moving average.
const LATENCY_ALPHA: f64 = 0.3;

/// What an isolate saw of a deployment recently (for least-busy, latency and usage routing).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeploymentStats {
    pub in_flight: u32,
    /// Moving average of the time to the answer (to the first chunk for streams).
    pub latency_ms: Option<f64>,
    /// Requests and tokens in the minute `minute` (Unix minutes).
    pub minute: u64,
    pub requests: u64,
    pub tokens: u64,
}

impl DeploymentStats {
    pub fn record_latency(&mut self, ms: f64) {
        self.latency_ms = Some(match self.latency_ms {
            Some(avg) => avg + LATENCY_ALPHA * (ms - avg),
            None => ms,
        });
    }

    pub fn record_usage(&mut self, now: u64, tokens: u64) {
        let minute = now / MINUTE_MS;
        if minute != self.minute {
            *self = DeploymentStats { minute, ..self.clone() };
            self.requests = 0;
            self.tokens = 0;
        }
        self.requests += 1;
        self.tokens = self.tokens.saturating_add(tokens);
    }

    fn usage_now(&self, now: u64) -> (u64, u64) {
        if self.minute == now / MINUTE_MS {
            (self.requests, self.tokens)
        } else {
            (0, 0)
        }
    }
}

/// Cooldowns of a group's deployments, shared by every isolate through one Durable Object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Recent failure times per deployment id (the last minute).
    pub failures: BTreeMap<String, Vec<u64>>,
    /// Deployment id → cooling down until.
    pub cooldown_until: BTreeMap<String, u64>,
}

/// Written by hand (`ToJson`: a smaller wasm), as serde's derive writes it.
impl crate::json::ToJson for Health {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Health { failures, cooldown_until } = self;
        let mut o = crate::json::ObjectWriter::new(out);
        o.field("failures", failures).field("cooldown_until", cooldown_until);
        o.end();
    }
}

/// Read by hand ([`FromJson`]: a smaller wasm).
impl FromJson for Health {
    fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let health = Health {
            failures: f.req("failures", |v| crate::fields::map_of(v, crate::fields::u64s)),
            cooldown_until: f.req("cooldown_until", crate::fields::u64_map),
        };
        f.finish(health)
    }
}

impl Health {
    /// Records a failure; a deployment cools down at once for `immediate` failures (429, 401,
    /// 404, 408), or when it has failed more than `allowed_fails` times in a minute. A group
    /// of one deployment is never cooled down: there is nothing else to send its traffic to.
    pub fn record_failure(
        &mut self,
        id: &str,
        now: u64,
        immediate: bool,
        group_size: usize,
        settings: &RouterSettings,
    ) -> bool {
        let failures = self.failures.entry(id.to_string()).or_default();
        failures.retain(|at| at + MINUTE_MS > now);
        failures.push(now);
        let cool = group_size > 1 && (immediate || failures.len() as u64 > u64::from(settings.allowed_fails));
        if cool {
            failures.clear();
            self.cooldown_until.insert(id.to_string(), now + settings.cooldown_ms);
        }
        self.cooldown_until.retain(|_, until| *until > now);
        cool
    }

    pub fn cooling_until(&self, id: &str, now: u64) -> Option<u64> {
        self.cooldown_until.get(id).copied().filter(|until| *until > now)
    }

    /// Takes in what another view knows (the shared object's or an isolate's): the later
    /// cooldown wins.
    pub fn merge(&mut self, other: &Health, now: u64) {
        for (id, until) in &other.cooldown_until {
            let entry = self.cooldown_until.entry(id.clone()).or_insert(0);
            *entry = (*entry).max(*until);
        }
        self.cooldown_until.retain(|_, until| *until > now);
    }
}

/// Why no deployment of a group can take the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Every deployment is cooling down; the first is back after this long.
    CoolingDown { retry_after_ms: u64 },
    /// No deployment's context window holds the request.
    ContextWindow,
}

/// The deployments that may take a request: not cooling down, not already tried by this
/// request (unless nothing else is left), able to hold it (with pre-call checks), and of the
/// lowest `order` among those.
pub fn eligible<'a>(
    group: &[&'a Deployment],
    health: &Health,
    now: u64,
    tried: &[String],
    prompt_tokens_estimate: u64,
    settings: &RouterSettings,
) -> Result<Vec<&'a Deployment>, Unavailable> {
    let fits = |d: &&Deployment| {
        !settings.enable_pre_call_checks || d.info.max_input_tokens.is_none_or(|max| prompt_tokens_estimate <= max)
    };
    let sized: Vec<&Deployment> = group.iter().copied().filter(fits).collect();
    if sized.is_empty() {
        return Err(Unavailable::ContextWindow);
    }
    let healthy: Vec<&Deployment> = if group.len() == 1 {
        sized
    } else {
        let warm: Vec<&Deployment> =
            sized.iter().copied().filter(|d| health.cooling_until(&d.id, now).is_none()).collect();
        if warm.is_empty() {
            let back = sized.iter().filter_map(|d| health.cooling_until(&d.id, now)).min().unwrap_or(now);
            return Err(Unavailable::CoolingDown { retry_after_ms: back.saturating_sub(now).max(1) });
        }
        warm
    };
    let untried: Vec<&Deployment> = healthy.iter().copied().filter(|d| !tried.contains(&d.id)).collect();
    let pool = if untried.is_empty() { healthy } else { untried };
    let lowest = pool.iter().map(|d| d.order.unwrap_or(u64::MAX)).min().unwrap_or(u64::MAX);
    Ok(pool.into_iter().filter(|d| d.order.unwrap_or(u64::MAX) == lowest).collect())
}

/// Picks one deployment by the strategy. `random` is uniform in [0, 1).
pub fn choose<'a>(
    candidates: &[&'a Deployment],
    strategy: Strategy,
    stats: &dyn Fn(&str) -> DeploymentStats,
    now: u64,
    random: f64,
) -> Option<&'a Deployment> {
    if candidates.len() <= 1 {
        return candidates.first().copied();
    }
    match strategy {
        Strategy::SimpleShuffle => weighted(candidates, random),
        Strategy::LeastBusy => lowest(candidates, random, |d| f64::from(stats(&d.id).in_flight)),
        // A deployment never measured counts as fastest, so that every one gets measured.
        Strategy::LatencyBasedRouting => lowest(candidates, random, |d| stats(&d.id).latency_ms.unwrap_or(0.0)),
        Strategy::UsageBasedRoutingV2 => {
            let within: Vec<&Deployment> = candidates
                .iter()
                .copied()
                .filter(|d| {
                    let (requests, tokens) = stats(&d.id).usage_now(now);
                    d.rpm.is_none_or(|r| requests < r) && d.tpm.is_none_or(|t| tokens < t)
                })
                .collect();
            let pool = if within.is_empty() { candidates } else { &within };
            lowest(pool, random, |d| stats(&d.id).usage_now(now).1 as f64)
        }
    }
}

/// LiteLLM's simple-shuffle: weighted by `weight`, else `rpm`, else `tpm`, else evenly.
fn weighted<'a>(candidates: &[&'a Deployment], random: f64) -> Option<&'a Deployment> {
    let weight_of = |d: &Deployment| -> f64 {
        if candidates.iter().any(|c| c.weight.is_some()) {
            d.weight.unwrap_or(0.0)
        } else if candidates.iter().any(|c| c.rpm.is_some()) {
            d.rpm.unwrap_or(0) as f64
        } else if candidates.iter().any(|c| c.tpm.is_some()) {
            d.tpm.unwrap_or(0) as f64
        } else {
            1.0
        }
    };
    let total: f64 = candidates.iter().map(|d| weight_of(d)).sum();
    if total <= 0.0 {
        return candidates.first().copied();
    }
    let mut point = random.clamp(0.0, 1.0) * total;
    for d in candidates {
        point -= weight_of(d);
        if point < 0.0 {
            return Some(d);
        }
    }
    candidates.last().copied()
}

/// The candidate with the lowest score; ties are broken at random.
fn lowest<'a>(
    candidates: &[&'a Deployment],
    random: f64,
    score: impl Fn(&Deployment) -> f64,
) -> Option<&'a Deployment> {
    let scores: Vec<f64> = candidates.iter().map(|d| score(d)).collect();
    let best = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let ties: Vec<&Deployment> = candidates.iter().zip(&scores).filter(|(_, s)| **s <= best).map(|(d, _)| *d).collect();
    let i = ((random.clamp(0.0, 0.999_999) * ties.len() as f64) as usize).min(ties.len().saturating_sub(1));
    ties.get(i).copied()
}

/// What a failed attempt means for the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Try again (another deployment when there is one); `cool_now` cools the deployment
    /// down at once; a failure that is not `transient` (401, 404) is not retried on the same
    /// deployment.
    Retry { cool_now: bool, transient: bool },
    /// The request is too long for this group: try its context-window fallbacks.
    ContextWindow,
    /// The request itself is wrong: answer the caller now.
    Final,
}

/// Classifies a failed attempt by its status (the gateway's own 502/504 included) and message.
pub fn classify(status: u16, message: &str) -> Failure {
    let lower = message.to_ascii_lowercase();
    match status {
        429 | 408 => Failure::Retry { cool_now: true, transient: true },
        401 | 404 => Failure::Retry { cool_now: true, transient: false },
        400 if ["too long", "context length", "context window", "maximum context", "too many tokens"]
            .iter()
            .any(|p| lower.contains(p)) =>
        {
            Failure::ContextWindow
        }
        500..=599 => Failure::Retry { cool_now: false, transient: true },
        _ => Failure::Final,
    }
}

/// How long to wait before attempt number `attempt` (1 for the first retry): exponential for
/// a 429, honouring `retry-after` up to [`MAX_BACKOFF_MS`]; at once otherwise.
pub fn backoff_ms(status: u16, attempt: u32, retry_after_s: Option<u64>) -> u64 {
    if status != 429 {
        return 0;
    }
    let exponential = BACKOFF_BASE_MS.saturating_mul(1 << attempt.saturating_sub(1).min(10));
    let asked = retry_after_s.map_or(0, |s| s.saturating_mul(1000));
    exponential.max(asked).min(MAX_BACKOFF_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reads_by_hand_as_serde_reads_it() {
        for v in [
            serde_json::json!({"failures": {"a": [1, 2]}, "cooldown_until": {"a": 5}}),
            serde_json::json!({"failures": {}, "cooldown_until": {}}),
            serde_json::json!({"failures": {"a": [-1]}, "cooldown_until": {}}),
            serde_json::json!({"cooldown_until": {}}),
        ] {
            let derived = serde_json::from_value::<Health>(v.clone()).ok();
            assert_eq!(Health::from_json(&v).ok(), derived, "{v}");
            if let Some(health) = derived {
                let written = crate::json::to_string(&health);
                assert_eq!(written, serde_json::to_string(&health).unwrap(), "written as serde writes it");
                assert_eq!(Health::from_json(&serde_json::from_str(&written).unwrap()), Ok(health));
            }
        }
    }
    use crate::config::ModelInfo;

    fn deployment(id: &str) -> Deployment {
        Deployment::for_tests(id)
    }

    fn settings() -> RouterSettings {
        RouterSettings { cooldown_ms: 5_000, allowed_fails: 2, ..RouterSettings::default() }
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn weights_shape_the_shuffle() {
        let a = Deployment { weight: Some(3.0), ..deployment("a") };
        let b = Deployment { weight: Some(1.0), ..deployment("b") };
        let group = [&a, &b];
        let picks: Vec<&str> = (0..100)
            .map(|i| choose(&group, Strategy::SimpleShuffle, &|_| DeploymentStats::default(), NOW, i as f64 / 100.0))
            .map(|d| d.unwrap().id.as_str())
            .collect();
        assert_eq!(picks.iter().filter(|id| **id == "a").count(), 75);
        // Without weights, rpm decides.
        let c = Deployment { rpm: Some(10), ..deployment("c") };
        let d = Deployment { rpm: Some(30), ..deployment("d") };
        let picks = (0..100)
            .filter(|i| {
                choose(&[&c, &d], Strategy::SimpleShuffle, &|_| DeploymentStats::default(), NOW, *i as f64 / 100.0)
                    .unwrap()
                    .id
                    == "d"
            })
            .count();
        assert_eq!(picks, 75);
    }

    #[test]
    fn least_busy_and_latency_pick_the_best_known() {
        let (a, b) = (deployment("a"), deployment("b"));
        let stats = |id: &str| DeploymentStats {
            in_flight: if id == "a" { 5 } else { 1 },
            latency_ms: Some(if id == "a" { 10.0 } else { 300.0 }),
            ..Default::default()
        };
        assert_eq!(choose(&[&a, &b], Strategy::LeastBusy, &stats, NOW, 0.5).unwrap().id, "b");
        assert_eq!(choose(&[&a, &b], Strategy::LatencyBasedRouting, &stats, NOW, 0.5).unwrap().id, "a");
        // An unmeasured deployment is tried before a measured one.
        let unmeasured = |id: &str| DeploymentStats { latency_ms: (id == "a").then_some(10.0), ..Default::default() };
        assert_eq!(choose(&[&a, &b], Strategy::LatencyBasedRouting, &unmeasured, NOW, 0.5).unwrap().id, "b");
    }

    #[test]
    fn latency_is_a_moving_average() {
        let mut s = DeploymentStats::default();
        s.record_latency(100.0);
        s.record_latency(200.0);
        assert_eq!(s.latency_ms, Some(130.0));
    }

    #[test]
    fn usage_based_prefers_the_least_used_within_limits() {
        let a = Deployment { tpm: Some(1000), ..deployment("a") };
        let b = Deployment { tpm: Some(100), ..deployment("b") };
        let mut sa = DeploymentStats::default();
        sa.record_usage(NOW, 500);
        let mut sb = DeploymentStats::default();
        sb.record_usage(NOW, 100);
        let stats = |id: &str| if id == "a" { sa.clone() } else { sb.clone() };
        // b used less, but it is at its tpm: a takes the request.
        assert_eq!(choose(&[&a, &b], Strategy::UsageBasedRoutingV2, &stats, NOW, 0.1).unwrap().id, "a");
        // A new minute starts from zero.
        assert_eq!(sa.usage_now(NOW + MINUTE_MS), (0, 0));
    }

    #[test]
    fn failures_cool_a_deployment_down_for_a_while() {
        let s = settings();
        let mut h = Health::default();
        assert!(!h.record_failure("a", NOW, false, 2, &s));
        assert!(!h.record_failure("a", NOW + 1, false, 2, &s));
        assert!(h.record_failure("a", NOW + 2, false, 2, &s), "the third failure is more than allowed_fails=2");
        assert_eq!(h.cooling_until("a", NOW + 3), Some(NOW + 5_002));
        assert_eq!(h.cooling_until("a", NOW + 5_002), None);
        assert!(h.record_failure("b", NOW, true, 2, &s), "a 429 cools at once");
        assert!(!h.record_failure("c", NOW, true, 1, &s), "a group of one is never cooled");
        // Failures older than a minute do not count.
        let mut h = Health::default();
        h.record_failure("a", NOW, false, 2, &s);
        h.record_failure("a", NOW + 1, false, 2, &s);
        assert!(!h.record_failure("a", NOW + MINUTE_MS + 5, false, 2, &s));
    }

    #[test]
    fn eligibility_skips_cooling_tried_and_too_small_deployments_and_respects_order() {
        let s = RouterSettings { enable_pre_call_checks: true, ..settings() };
        let a = Deployment { order: Some(1), ..deployment("a") };
        let b = Deployment { order: Some(2), ..deployment("b") };
        let small = Deployment {
            order: Some(1),
            info: ModelInfo { max_input_tokens: Some(100), ..Default::default() },
            ..deployment("small")
        };
        let group = [&a, &b, &small];
        let ids = |r: Result<Vec<&Deployment>, Unavailable>| -> Vec<String> {
            r.unwrap().iter().map(|d| d.id.clone()).collect()
        };
        let mut h = Health::default();
        assert_eq!(ids(eligible(&group, &h, NOW, &[], 10, &s)), ["a", "small"]);
        assert_eq!(ids(eligible(&group, &h, NOW, &[], 1000, &s)), ["a"], "small cannot hold 1000 tokens");
        h.record_failure("a", NOW, true, 3, &s);
        assert_eq!(ids(eligible(&group, &h, NOW, &[], 1000, &s)), ["b"], "order 2 takes over while a cools");
        assert_eq!(
            ids(eligible(&group, &h, NOW, &["b".to_string()], 1000, &s)),
            ["b"],
            "tried, but nothing else is left"
        );
        h.record_failure("b", NOW, true, 3, &s);
        assert_eq!(
            eligible(&[&a, &b], &h, NOW + 1000, &[], 10, &s),
            Err(Unavailable::CoolingDown { retry_after_ms: 4_000 })
        );
        assert_eq!(eligible(&[&small], &h, NOW, &[], 1000, &s), Err(Unavailable::ContextWindow));
        // A group of one is used even while it would be cooling.
        assert_eq!(ids(eligible(&[&a], &h, NOW, &[], 10, &s)), ["a"]);
    }

    #[test]
    fn failures_are_classified() {
        assert_eq!(classify(429, ""), Failure::Retry { cool_now: true, transient: true });
        assert_eq!(classify(404, ""), Failure::Retry { cool_now: true, transient: false });
        assert_eq!(classify(401, ""), Failure::Retry { cool_now: true, transient: false });
        assert_eq!(classify(503, ""), Failure::Retry { cool_now: false, transient: true });
        assert_eq!(classify(504, "timeout"), Failure::Retry { cool_now: false, transient: true });
        assert_eq!(classify(400, "Input is too long for requested model."), Failure::ContextWindow);
        assert_eq!(classify(400, "Unsupported value: 'temperature'"), Failure::Final);
        assert_eq!(classify(403, ""), Failure::Final);
    }

    #[test]
    fn backoff_is_exponential_for_429_and_bounded() {
        assert_eq!(backoff_ms(500, 1, None), 0);
        assert_eq!((backoff_ms(429, 1, None), backoff_ms(429, 2, None), backoff_ms(429, 3, None)), (250, 500, 1000));
        assert_eq!(backoff_ms(429, 1, Some(3)), 3000);
        assert_eq!(backoff_ms(429, 1, Some(3600)), MAX_BACKOFF_MS);
    }

    #[test]
    fn merged_views_keep_the_later_cooldown() {
        let mut a = Health::default();
        a.cooldown_until.insert("x".into(), NOW + 10);
        let mut b = Health::default();
        b.cooldown_until.insert("x".into(), NOW + 20);
        b.cooldown_until.insert("y".into(), NOW - 1);
        a.merge(&b, NOW);
        assert_eq!(a.cooldown_until.get("x"), Some(&(NOW + 20)));
        assert!(!a.cooldown_until.contains_key("y"));
    }
}
