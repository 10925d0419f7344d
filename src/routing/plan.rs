//! One request's way through the router, as a state machine: given the clock, the groups'
//! health and this isolate's stats, [`RoutePlan::next`] says what to do next (admit the
//! request in a fallback group, attempt a deployment, wait, or give up), and
//! [`RoutePlan::report`] tells it how that went. The plan performs nothing itself; the runtime
//! (`runtime::dispatch::route`) performs each step.
//!
//! The policy, in order:
//! - The requested group first, then (once it is spent) its `fallbacks` (or the
//!   `default_fallbacks`) in order. Fallbacks of a fallback group are not followed; a group is
//!   visited once; a fallback group the key may not use is skipped, and the key's ledger must
//!   admit the request again in each one it may (a refusal is the last error, and the next
//!   group is tried).
//! - Within a group, the first attempt and up to `num_retries` retries, each on a deployment
//!   that [`eligible`] allows and the strategy [`choose`]s. A deployment that answered 401 or
//!   404 is not tried again by this request. A deployment whose own limits refuse the attempt
//!   spends that attempt.
//! - A failure is [`classify`]d: a request error ends the request with it; a context-window
//!   error goes to the group's `context_window_fallbacks` (before anything queued, and without
//!   the group's own fallbacks); a retryable one strikes the deployment in the group's health
//!   and, before a further retry in the group, waits [`backoff_ms`] (within the deadline).
//! - A group whose deployments all cool down ends with "no deployments" (429, `retry-after`);
//!   one whose deployments cannot hold the request, with a context-window 400 (both as the
//!   last error, the next group is tried).
//! - Past `router_settings.timeout` (checked before each attempt) the request ends with a 504.
//! - When no group is left: the last error, or "no deployments" for the requested group.

use std::collections::VecDeque;

use super::{backoff_ms, choose, classify, eligible, DeploymentStats, Failure, Health, Unavailable};
use crate::config::{Deployment, GatewayConfig, RouterSettings};
use crate::databricks;
use crate::openai::ApiError;
use crate::refusals;

/// What the plan reads of the world, asked at the moment it decides.
pub trait View {
    /// The clock, in Unix milliseconds.
    fn now(&self) -> u64;
    /// The cooldowns of a group's deployments, as this isolate knows them.
    fn health(&self, group: &str) -> Health;
    /// What this isolate saw of a deployment (least-busy, latency and usage routing).
    fn stats(&self, deployment_id: &str) -> DeploymentStats;
    /// Uniform in [0, 1).
    fn random(&mut self) -> f64;
}

/// What to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Step<'c> {
    /// Admit the request again in the fallback group `group` (the key's ledger); report
    /// [`Outcome::Entered`].
    Enter { group: String },
    /// Send the request to `deployment` of `group` (once its own limits admit it); report
    /// [`Outcome::Refused`] or [`Outcome::Failed`], or nothing when it answered. `retry` is
    /// true for every attempt after a group's first.
    Attempt { group: String, deployment: &'c Deployment, retry: bool },
    /// Wait this long, then ask again.
    Wait { ms: u64 },
    /// Stop: this error is the answer.
    GiveUp(ApiError),
}

/// How the last step went. An answer ends the request and needs no report.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The key's ledger admitted the request in the group, or refused it.
    Entered(Result<(), ApiError>),
    /// The deployment's own limits refused the attempt: nothing was sent.
    Refused(ApiError),
    /// The attempt failed: Databricks' error, or the gateway's own 502 or 504.
    Failed(ApiError),
}

/// A failure the group's health must record ([`Health::record_failure`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Strike<'c> {
    pub group: String,
    pub deployment: &'c Deployment,
    /// Cool the deployment down at once (429, 401, 404, 408).
    pub immediate: bool,
    pub group_size: usize,
}

/// The routing of one request. See the module's doc for the policy.
pub struct RoutePlan<'c, 'k> {
    config: &'c GatewayConfig,
    settings: &'c RouterSettings,
    requested: String,
    may_use: &'k dyn Fn(&str) -> bool,
    /// For pre-call checks: the typical estimate, not the budget's bound.
    prompt_tokens_estimate: u64,
    deadline: Option<u64>,
    queue: VecDeque<String>,
    visited: Vec<String>,
    retries: u32,
    fallbacks: u32,
    last_error: Option<ApiError>,
    state: State<'c>,
}

/// A group being tried.
struct Group<'c> {
    name: String,
    members: Vec<&'c Deployment>,
    /// Deployments attempted in this group, in order.
    tried: Vec<String>,
    /// Deployments that answered 401 or 404: not tried again by this request.
    broken: Vec<String>,
    /// 0 for the first attempt, up to `num_retries`.
    attempt: u32,
}

enum State<'c> {
    /// The next group comes off the queue.
    NextGroup,
    /// Waiting for the key's ledger in this group.
    Entering(Group<'c>),
    /// Attempt number `attempt` of the group comes next, after waiting `backoff` ms.
    Trying { group: Group<'c>, backoff: u64 },
    /// Waiting for the outcome of an attempt on this deployment.
    Attempting(Group<'c>, &'c Deployment),
    /// Given up with this error.
    Over(ApiError),
}

impl<'c, 'k> RoutePlan<'c, 'k> {
    /// Routes a request for `group` that arrived at `started_ms`. Fallbacks go only to groups
    /// the caller `may_use`.
    pub fn new(
        config: &'c GatewayConfig,
        group: &str,
        started_ms: u64,
        prompt_tokens_estimate: u64,
        may_use: &'k dyn Fn(&str) -> bool,
    ) -> Self {
        let settings = &config.router;
        RoutePlan {
            config,
            settings,
            requested: group.to_string(),
            may_use,
            prompt_tokens_estimate,
            deadline: settings.timeout_ms.map(|t| started_ms + t),
            queue: VecDeque::from([group.to_string()]),
            visited: Vec::new(),
            retries: 0,
            fallbacks: 0,
            last_error: None,
            state: State::NextGroup,
        }
    }

    /// Retries made so far (`x-litellm-attempted-retries`).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Fallback groups entered so far (`x-litellm-attempted-fallbacks`).
    pub fn fallbacks(&self) -> u32 {
        self.fallbacks
    }

    /// When `router_settings.timeout` runs out, if set: no attempt may outlast it.
    pub fn deadline(&self) -> Option<u64> {
        self.deadline
    }

    /// The next step. After an [`Step::Enter`] or a [`Step::Attempt`], its outcome must be
    /// reported first; after [`Step::GiveUp`], the same error is given again.
    pub fn next(&mut self, view: &mut impl View) -> Step<'c> {
        loop {
            match std::mem::replace(&mut self.state, State::NextGroup) {
                State::NextGroup => {
                    let Some(name) = self.queue.pop_front() else {
                        let error =
                            self.last_error.take().unwrap_or_else(|| refusals::no_deployments(&self.requested, 1000));
                        return self.give_up(error);
                    };
                    if self.visited.contains(&name) {
                        continue;
                    }
                    self.visited.push(name.clone());
                    if name == self.requested {
                        self.state = State::Trying { group: self.group(name), backoff: 0 };
                    } else if (self.may_use)(&name) {
                        self.fallbacks += 1;
                        self.state = State::Entering(self.group(name.clone()));
                        return Step::Enter { group: name };
                    }
                }
                State::Trying { group, backoff } if backoff > 0 => {
                    let ms = self.deadline.map_or(backoff, |d| backoff.min(d.saturating_sub(view.now())));
                    self.state = State::Trying { group, backoff: 0 };
                    if ms > 0 {
                        return Step::Wait { ms };
                    }
                }
                State::Trying { mut group, .. } => {
                    if group.attempt > self.settings.num_retries {
                        self.spent(&group);
                        continue;
                    }
                    if self.deadline.is_some_and(|d| view.now() >= d) {
                        return self.give_up(databricks::timed_out(self.settings.timeout_ms.unwrap_or_default()));
                    }
                    let members: Vec<&Deployment> =
                        group.members.iter().copied().filter(|d| !group.broken.contains(&d.id)).collect();
                    if members.is_empty() {
                        self.spent(&group);
                        continue;
                    }
                    let health = view.health(&group.name);
                    let now = view.now();
                    let candidates = match eligible(
                        &members,
                        &health,
                        now,
                        &group.tried,
                        self.prompt_tokens_estimate,
                        self.settings,
                    ) {
                        Ok(candidates) => candidates,
                        Err(Unavailable::CoolingDown { retry_after_ms }) => {
                            self.last_error = Some(refusals::no_deployments(&group.name, retry_after_ms));
                            self.spent(&group);
                            continue;
                        }
                        Err(Unavailable::ContextWindow) => {
                            self.last_error = Some(context_window(&group.name));
                            self.too_long_for(&group);
                            continue;
                        }
                    };
                    let random = view.random();
                    let stats = |id: &str| view.stats(id);
                    let Some(deployment) = choose(&candidates, self.settings.strategy, &stats, now, random) else {
                        self.spent(&group);
                        continue;
                    };
                    let retry = group.attempt > 0;
                    if retry {
                        self.retries += 1;
                    }
                    group.tried.push(deployment.id.clone());
                    let step = Step::Attempt { group: group.name.clone(), deployment, retry };
                    self.state = State::Attempting(group, deployment);
                    return step;
                }
                State::Entering(_) | State::Attempting(..) => {
                    return self.give_up(ApiError::internal("routing: a step's outcome was not reported"));
                }
                State::Over(error) => return self.give_up(error),
            }
        }
    }

    /// Takes in how the last step went. A failure that the group's health must record comes
    /// back as a [`Strike`]. An outcome that answers no step is ignored.
    pub fn report(&mut self, outcome: Outcome) -> Option<Strike<'c>> {
        match (std::mem::replace(&mut self.state, State::NextGroup), outcome) {
            (State::Entering(group), Outcome::Entered(Ok(()))) => self.state = State::Trying { group, backoff: 0 },
            (State::Entering(_), Outcome::Entered(Err(error))) => self.last_error = Some(error),
            (State::Attempting(mut group, _), Outcome::Refused(error)) => {
                self.last_error = Some(error);
                group.attempt += 1;
                self.state = State::Trying { group, backoff: 0 };
            }
            (State::Attempting(mut group, deployment), Outcome::Failed(error)) => {
                match classify(error.status, &error.message) {
                    Failure::Final => self.state = State::Over(error),
                    Failure::ContextWindow => {
                        self.last_error = Some(error);
                        self.too_long_for(&group);
                    }
                    Failure::Retry { cool_now, transient } => {
                        let strike = Strike {
                            group: group.name.clone(),
                            deployment,
                            immediate: cool_now,
                            group_size: group.members.len(),
                        };
                        if !transient {
                            group.broken.push(deployment.id.clone());
                        }
                        // No wait after a group's last attempt.
                        let backoff = if group.attempt < self.settings.num_retries {
                            backoff_ms(error.status, group.attempt + 1, error.retry_after_s)
                        } else {
                            0
                        };
                        self.last_error = Some(error);
                        group.attempt += 1;
                        self.state = State::Trying { group, backoff };
                        return Some(strike);
                    }
                }
            }
            (state, _) => self.state = state,
        }
        None
    }

    fn group(&self, name: String) -> Group<'c> {
        Group { members: self.config.group(&name), name, tried: Vec::new(), broken: Vec::new(), attempt: 0 }
    }

    fn give_up(&mut self, error: ApiError) -> Step<'c> {
        self.state = State::Over(error.clone());
        Step::GiveUp(error)
    }

    /// The group's attempts are spent: the requested group's fallbacks come next.
    fn spent(&mut self, group: &Group<'_>) {
        if group.name == self.requested {
            self.queue.extend(self.settings.fallbacks_for(&group.name).iter().cloned());
        }
    }

    /// The request is too long for the group: its context-window fallbacks come first.
    fn too_long_for(&mut self, group: &Group<'_>) {
        for g in self.settings.context_window_fallbacks_for(&group.name).iter().rev() {
            self.queue.push_front(g.clone());
        }
    }
}

fn context_window(group: &str) -> ApiError {
    ApiError::invalid_request(
        format!("The request is too long for the context window of every deployment of `{group}`."),
        "messages",
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::{ModelInfo, Strategy};
    use crate::openai::ErrorKind;

    const START: u64 = 1_800_000_000_000;

    /// What happens when the plan's step is performed, in order.
    #[derive(Clone, Copy, Debug)]
    enum Act {
        /// The key's ledger admits the request in a fallback group.
        Admit,
        /// It refuses (a 429 of the key's limits).
        Deny,
        /// The deployment's own limits refuse the attempt.
        Refuse,
        /// The deployment answers.
        Answer,
        /// The deployment fails with this status and message.
        Fail(u16, &'static str),
        /// A 429 with `retry-after` (seconds).
        FailAfter(u16, u64),
    }
    use Act::*;

    /// The world as the plan sees it: a clock that attempts and waits move, the groups'
    /// health (struck as the runtime strikes it), stats and a fixed random draw.
    struct Sim {
        now: u64,
        health: HashMap<String, Health>,
        stats: HashMap<String, DeploymentStats>,
        random: f64,
    }

    impl View for Sim {
        fn now(&self) -> u64 {
            self.now
        }
        fn health(&self, group: &str) -> Health {
            self.health.get(group).cloned().unwrap_or_default()
        }
        fn stats(&self, id: &str) -> DeploymentStats {
            self.stats.get(id).cloned().unwrap_or_default()
        }
        fn random(&mut self) -> f64 {
            self.random
        }
    }

    struct Case {
        name: &'static str,
        deployments: Vec<Deployment>,
        settings: RouterSettings,
        group: &'static str,
        /// The groups the key may use (all when `None`).
        allowed: Option<&'static [&'static str]>,
        prompt_tokens: u64,
        /// Deployments cooling down when the request arrives: (group, id, for ms).
        cooling: &'static [(&'static str, &'static str, u64)],
        stats: Vec<(&'static str, DeploymentStats)>,
        random: f64,
        /// How long a failing attempt takes.
        attempt_ms: u64,
        script: &'static [Act],
        /// The steps, and `cool <id>` where a strike cooled a deployment down.
        steps: &'static [&'static str],
        retries: u32,
        fallbacks: u32,
        /// `answered by <id>`, or the start of `<status> [(retry-after <s>)]: <message>`.
        end: &'static str,
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                name: "",
                deployments: Vec::new(),
                settings: RouterSettings { num_retries: 3, allowed_fails: 3, ..RouterSettings::default() },
                group: "a",
                allowed: None,
                prompt_tokens: 10,
                cooling: &[],
                stats: Vec::new(),
                random: 0.0,
                attempt_ms: 100,
                script: &[],
                steps: &[],
                retries: 0,
                fallbacks: 0,
                end: "",
            }
        }
    }

    /// Deployment `id` of `group`.
    fn dep(group: &str, id: &str) -> Deployment {
        Deployment { model_name: group.into(), ..Deployment::for_tests(id) }
    }

    /// Groups written as `a: a1 a2, b: b1`.
    fn groups(spec: &str) -> Vec<Deployment> {
        spec.split(',')
            .flat_map(|g| {
                let (group, ids) = g.split_once(':').unwrap();
                ids.split_whitespace().map(|id| dep(group.trim(), id)).collect::<Vec<_>>()
            })
            .collect()
    }

    fn fallbacks(spec: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        spec.iter().map(|(g, list)| (g.to_string(), list.iter().map(|s| s.to_string()).collect())).collect()
    }

    struct Run {
        steps: Vec<String>,
        end: String,
        retries: u32,
        fallbacks: u32,
    }

    fn error_line(e: &ApiError) -> String {
        let after = e.retry_after_s.map(|s| format!(" (retry-after {s})")).unwrap_or_default();
        format!("{}{after}: {}", e.status, e.message)
    }

    fn config(deployments: Vec<Deployment>, router: RouterSettings) -> GatewayConfig {
        GatewayConfig {
            deployments,
            master_key: None,
            enforce_model_rate_limits: false,
            router,
            drop_params: false,
            access_groups: Vec::new(),
        }
    }

    fn sim(now: u64) -> Sim {
        Sim { now, health: HashMap::new(), stats: HashMap::new(), random: 0.0 }
    }

    /// Performs the plan's steps as the runtime does, with the script's outcomes, and strikes
    /// the groups' health as the runtime does.
    fn run(case: &Case) -> Run {
        let config = config(case.deployments.clone(), case.settings.clone());
        let may_use = |g: &str| case.allowed.is_none_or(|list| list.contains(&g));
        let mut plan = RoutePlan::new(&config, case.group, START, case.prompt_tokens, &may_use);
        let mut sim = Sim { random: case.random, ..sim(START) };
        for (group, id, ms) in case.cooling {
            sim.health.entry(group.to_string()).or_default().cooldown_until.insert(id.to_string(), START + ms);
        }
        sim.stats = case.stats.iter().map(|(id, s)| (id.to_string(), s.clone())).collect();
        let mut script = case.script.iter().copied();
        let mut act = |steps: &[String]| {
            script.next().unwrap_or_else(|| panic!("{}: the script ran out after {steps:?}", case.name))
        };
        let mut steps = Vec::new();
        let end = loop {
            assert!(steps.len() < 100, "{}: the plan does not end: {steps:?}", case.name);
            match plan.next(&mut sim) {
                Step::Enter { group } => {
                    steps.push(format!("enter {group}"));
                    let entered = match act(&steps) {
                        Admit => Ok(()),
                        Deny => Err(ApiError::new(429, ErrorKind::RateLimit, format!("key refused in {group}"))),
                        other => panic!("{}: admission to {group} met {other:?}", case.name),
                    };
                    assert_eq!(plan.report(Outcome::Entered(entered)), None);
                }
                Step::Attempt { group, deployment, retry } => {
                    steps.push(format!("{} {group}/{}", if retry { "retry" } else { "try" }, deployment.id));
                    let error = match act(&steps) {
                        Answer => break format!("answered by {}", deployment.id),
                        Refuse => {
                            let refused =
                                ApiError::new(429, ErrorKind::RateLimit, format!("{} refused", deployment.id));
                            assert_eq!(plan.report(Outcome::Refused(refused)), None);
                            continue;
                        }
                        Fail(status, message) => ApiError::new(status, ErrorKind::Api, message),
                        FailAfter(status, s) => ApiError {
                            retry_after_s: Some(s),
                            ..ApiError::new(status, ErrorKind::RateLimit, "slow down")
                        },
                        other => panic!("{}: attempt on {} met {other:?}", case.name, deployment.id),
                    };
                    sim.now += case.attempt_ms;
                    if let Some(strike) = plan.report(Outcome::Failed(error)) {
                        assert_eq!((strike.group.as_str(), strike.deployment), (group.as_str(), deployment));
                        let health = sim.health.entry(group).or_default();
                        let Strike { immediate, group_size, .. } = strike;
                        if health.record_failure(&deployment.id, sim.now, immediate, group_size, &case.settings) {
                            steps.push(format!("cool {}", deployment.id));
                        }
                    }
                }
                Step::Wait { ms } => {
                    steps.push(format!("wait {ms}"));
                    sim.now += ms;
                }
                Step::GiveUp(error) => break error_line(&error),
            }
        };
        assert!(script.next().is_none(), "{}: the script was not used up: {steps:?}", case.name);
        Run { steps, end, retries: plan.retries(), fallbacks: plan.fallbacks() }
    }

    fn used(tokens: u64) -> DeploymentStats {
        let mut s = DeploymentStats::default();
        s.record_usage(START, tokens);
        s
    }

    fn settings(f: impl FnOnce(&mut RouterSettings)) -> RouterSettings {
        let mut s = Case::default().settings;
        f(&mut s);
        s
    }

    fn cases() -> Vec<Case> {
        let small = |group: &str, id: &str| Deployment {
            info: ModelInfo { max_input_tokens: Some(100), ..Default::default() },
            ..dep(group, id)
        };
        vec![
            // Retries within a group.
            Case {
                name: "a failure is retried on another deployment of the group",
                deployments: groups("a: a1 a2"),
                script: &[Fail(500, "boom"), Answer],
                steps: &["try a/a1", "retry a/a2"],
                retries: 1,
                end: "answered by a2",
                ..Case::default()
            },
            Case {
                name: "num_retries spent: the last error is the answer",
                deployments: groups("a: a1"),
                settings: settings(|s| s.num_retries = 2),
                script: &[Fail(500, "boom 1"), Fail(503, "boom 2"), Fail(502, "boom 3")],
                steps: &["try a/a1", "retry a/a1", "retry a/a1"],
                retries: 2,
                end: "502: boom 3",
                ..Case::default()
            },
            Case {
                name: "a request error is the answer at once: no retry, no fallback",
                deployments: groups("a: a1 a2, b: b1"),
                settings: settings(|s| s.fallbacks = fallbacks(&[("a", &["b"])])),
                script: &[Fail(400, "Unsupported value: 'temperature'")],
                steps: &["try a/a1"],
                end: "400: Unsupported value",
                ..Case::default()
            },
            Case {
                name: "a deployment's own limits refusing an attempt spend it, without a wait",
                deployments: groups("a: a1 a2"),
                script: &[Refuse, Answer],
                steps: &["try a/a1", "retry a/a2"],
                retries: 1,
                end: "answered by a2",
                ..Case::default()
            },
            Case {
                name: "refusals by the deployments' limits: the last one is the answer",
                deployments: groups("a: a1 a2"),
                settings: settings(|s| s.num_retries = 1),
                script: &[Refuse, Refuse],
                steps: &["try a/a1", "retry a/a2"],
                retries: 1,
                end: "429: a2 refused",
                ..Case::default()
            },
            // Cooldowns.
            Case {
                name: "more than allowed_fails failures cool a deployment; all cooling: no deployments",
                deployments: groups("a: a1 a2"),
                settings: settings(|s| (s.allowed_fails, s.num_retries) = (1, 4)),
                script: &[Fail(500, "boom"), Fail(500, "boom"), Fail(500, "boom"), Fail(500, "boom")],
                steps: &["try a/a1", "retry a/a2", "retry a/a1", "cool a1", "retry a/a2", "cool a2"],
                retries: 3,
                // a1 is back first, at 300 + 5 000 ms; the clock is at 400.
                end: "429 (retry-after 5): No deployments available for selected model: every deployment of `a`",
                ..Case::default()
            },
            Case {
                name: "deployments cooling down are skipped",
                deployments: groups("a: a1 a2"),
                cooling: &[("a", "a1", 3_000)],
                script: &[Answer],
                steps: &["try a/a2"],
                end: "answered by a2",
                ..Case::default()
            },
            Case {
                name: "every deployment cooling down: nothing is sent, 429 with when the first is back",
                deployments: groups("a: a1 a2"),
                cooling: &[("a", "a1", 2_500), ("a", "a2", 1_500)],
                end: "429 (retry-after 2): No deployments available",
                ..Case::default()
            },
            Case {
                name: "every deployment cooling down: the fallbacks are tried",
                deployments: groups("a: a1 a2, b: b1"),
                settings: settings(|s| s.fallbacks = fallbacks(&[("a", &["b"])])),
                cooling: &[("a", "a1", 2_500), ("a", "a2", 1_500)],
                script: &[Admit, Answer],
                steps: &["enter b", "try b/b1"],
                fallbacks: 1,
                end: "answered by b1",
                ..Case::default()
            },
            Case {
                name: "a group of one deployment is never cooled down, and is used while it would be",
                deployments: groups("a: a1"),
                settings: settings(|s| s.allowed_fails = 0),
                cooling: &[("a", "a1", 60_000)],
                script: &[Fail(500, "boom"), Answer],
                steps: &["try a/a1", "retry a/a1"],
                retries: 1,
                end: "answered by a1",
                ..Case::default()
            },
            // Waits.
            Case {
                name: "429s back off exponentially, or as retry-after asks, up to 10 s",
                deployments: groups("a: a1"),
                script: &[FailAfter(429, 3), FailAfter(429, 3_600), Fail(429, "slow down"), Answer],
                steps: &["try a/a1", "wait 3000", "retry a/a1", "wait 10000", "retry a/a1", "wait 1000", "retry a/a1"],
                retries: 3,
                end: "answered by a1",
                ..Case::default()
            },
            Case {
                name: "a 429 cools a deployment at once; the retry goes elsewhere after the backoff",
                deployments: groups("a: a1 a2"),
                script: &[Fail(429, "slow down"), Answer],
                steps: &["try a/a1", "cool a1", "wait 250", "retry a/a2"],
                retries: 1,
                end: "answered by a2",
                ..Case::default()
            },
            Case {
                name: "no wait after a group's last attempt: the fallback goes at once",
                deployments: groups("a: a1, b: b1"),
                settings: settings(|s| {
                    s.num_retries = 1;
                    s.fallbacks = fallbacks(&[("a", &["b"])]);
                }),
                script: &[Fail(429, "slow down"), Fail(429, "slow down"), Admit, Answer],
                steps: &["try a/a1", "wait 250", "retry a/a1", "enter b", "try b/b1"],
                retries: 1,
                fallbacks: 1,
                end: "answered by b1",
                ..Case::default()
            },
            // 401 and 404.
            Case {
                name: "401 and 404 are not retried on the same deployment",
                deployments: groups("a: a1 a2, b: b1"),
                settings: settings(|s| s.fallbacks = fallbacks(&[("a", &["b"])])),
                script: &[Fail(401, "who"), Fail(404, "where"), Admit, Answer],
                steps: &["try a/a1", "cool a1", "retry a/a2", "cool a2", "enter b", "try b/b1"],
                retries: 1,
                fallbacks: 1,
                end: "answered by b1",
                ..Case::default()
            },
            Case {
                name: "a lone deployment answering 401 is not retried: its error is the answer",
                deployments: groups("a: a1"),
                script: &[Fail(401, "who")],
                steps: &["try a/a1"],
                end: "401: who",
                ..Case::default()
            },
            // Context windows.
            Case {
                name: "too long for every deployment (pre-call checks): context-window fallback, nothing sent",
                deployments: vec![small("a", "a1"), dep("big", "big1")],
                settings: settings(|s| {
                    s.enable_pre_call_checks = true;
                    s.context_window_fallbacks = fallbacks(&[("a", &["big"])]);
                }),
                prompt_tokens: 1_000,
                script: &[Admit, Answer],
                steps: &["enter big", "try big/big1"],
                fallbacks: 1,
                end: "answered by big1",
                ..Case::default()
            },
            Case {
                name: "pre-call checks skip the deployments too small for the request",
                deployments: vec![small("a", "a1"), dep("a", "a2")],
                settings: settings(|s| s.enable_pre_call_checks = true),
                prompt_tokens: 1_000,
                script: &[Answer],
                steps: &["try a/a2"],
                end: "answered by a2",
                ..Case::default()
            },
            Case {
                name: "Databricks' context-length error: the context-window fallbacks before the others",
                deployments: groups("a: a1, b: b1, big: big1"),
                settings: settings(|s| {
                    s.fallbacks = fallbacks(&[("a", &["b"])]);
                    s.context_window_fallbacks = fallbacks(&[("a", &["big"])]);
                }),
                script: &[Fail(400, "This model's maximum context length is 8192 tokens"), Admit, Answer],
                steps: &["try a/a1", "enter big", "try big/big1"],
                fallbacks: 1,
                end: "answered by big1",
                ..Case::default()
            },
            Case {
                name: "too long without context-window fallbacks: the 400, and the group's fallbacks are not tried",
                deployments: vec![small("a", "a1"), dep("b", "b1")],
                settings: settings(|s| {
                    s.enable_pre_call_checks = true;
                    s.fallbacks = fallbacks(&[("a", &["b"])]);
                }),
                prompt_tokens: 1_000,
                end: "400: The request is too long for the context window of every deployment of `a`.",
                ..Case::default()
            },
            // Fallbacks.
            Case {
                name: "fallbacks go only to groups the key may use",
                deployments: groups("a: a1, b: b1, c: c1"),
                settings: settings(|s| {
                    s.num_retries = 0;
                    s.fallbacks = fallbacks(&[("a", &["b", "c"])]);
                }),
                allowed: Some(&["a", "c"]),
                script: &[Fail(500, "boom"), Admit, Answer],
                steps: &["try a/a1", "enter c", "try c/c1"],
                fallbacks: 1,
                end: "answered by c1",
                ..Case::default()
            },
            Case {
                name: "a fallback group the key's ledger refuses is skipped",
                deployments: groups("a: a1, b: b1, c: c1"),
                settings: settings(|s| {
                    s.num_retries = 0;
                    s.fallbacks = fallbacks(&[("a", &["b", "c"])]);
                }),
                script: &[Fail(500, "boom"), Deny, Admit, Answer],
                steps: &["try a/a1", "enter b", "enter c", "try c/c1"],
                fallbacks: 2,
                end: "answered by c1",
                ..Case::default()
            },
            Case {
                name: "the ledger refusing the last fallback: its refusal is the answer",
                deployments: groups("a: a1, b: b1"),
                settings: settings(|s| {
                    s.num_retries = 0;
                    s.fallbacks = fallbacks(&[("a", &["b"])]);
                }),
                script: &[Fail(500, "boom"), Deny],
                steps: &["try a/a1", "enter b"],
                fallbacks: 1,
                end: "429: key refused in b",
                ..Case::default()
            },
            Case {
                name: "default_fallbacks serve a group without fallbacks of its own",
                deployments: groups("a: a1, d: d1"),
                settings: settings(|s| {
                    s.num_retries = 0;
                    s.default_fallbacks = vec!["d".into()];
                }),
                script: &[Fail(503, "busy"), Admit, Answer],
                steps: &["try a/a1", "enter d", "try d/d1"],
                fallbacks: 1,
                end: "answered by d1",
                ..Case::default()
            },
            Case {
                name: "a group is visited once, and a fallback's own fallbacks are not followed",
                deployments: groups("a: a1, b: b1, c: c1"),
                settings: settings(|s| {
                    s.num_retries = 0;
                    s.fallbacks = fallbacks(&[("a", &["b", "a", "b"]), ("b", &["c"])]);
                }),
                script: &[Fail(500, "boom a"), Admit, Fail(500, "boom b")],
                steps: &["try a/a1", "enter b", "try b/b1"],
                fallbacks: 1,
                end: "500: boom b",
                ..Case::default()
            },
            // The router's timeout.
            Case {
                name: "past router_settings.timeout no attempt nor fallback is made: 504",
                deployments: groups("a: a1 a2, b: b1"),
                settings: settings(|s| {
                    s.timeout_ms = Some(2_000);
                    s.fallbacks = fallbacks(&[("a", &["b"])]);
                }),
                attempt_ms: 1_500,
                script: &[Fail(500, "boom"), Fail(500, "boom")],
                steps: &["try a/a1", "retry a/a2"],
                retries: 1,
                end: "504: Databricks did not answer within the configured timeout of 2 s",
                ..Case::default()
            },
            Case {
                name: "a wait ends at the router's deadline",
                deployments: groups("a: a1"),
                settings: settings(|s| s.timeout_ms = Some(2_000)),
                attempt_ms: 500,
                script: &[FailAfter(429, 3)],
                steps: &["try a/a1", "wait 1500"],
                end: "504: Databricks did not answer within the configured timeout of 2 s",
                ..Case::default()
            },
            // Strategies.
            Case {
                name: "order: the lowest order first; the next order once it cools down",
                deployments: vec![
                    Deployment { order: Some(2), ..dep("a", "a1") },
                    Deployment { order: Some(1), ..dep("a", "a2") },
                ],
                script: &[Fail(429, "slow down"), Answer],
                steps: &["try a/a2", "cool a2", "wait 250", "retry a/a1"],
                retries: 1,
                end: "answered by a1",
                ..Case::default()
            },
            Case {
                name: "simple-shuffle: by weight (a draw of 0.5 falls in a2's 3 of 4)",
                deployments: vec![
                    Deployment { weight: Some(1.0), ..dep("a", "a1") },
                    Deployment { weight: Some(3.0), ..dep("a", "a2") },
                ],
                random: 0.5,
                script: &[Answer],
                steps: &["try a/a2"],
                end: "answered by a2",
                ..Case::default()
            },
            Case {
                name: "least-busy: the fewest in flight, then the untried one",
                deployments: groups("a: a1 a2 a3"),
                settings: settings(|s| s.strategy = Strategy::LeastBusy),
                stats: vec![
                    ("a1", DeploymentStats { in_flight: 2, ..Default::default() }),
                    ("a2", DeploymentStats { in_flight: 0, ..Default::default() }),
                    ("a3", DeploymentStats { in_flight: 1, ..Default::default() }),
                ],
                script: &[Fail(500, "boom"), Fail(500, "boom"), Answer],
                steps: &["try a/a2", "retry a/a3", "retry a/a1"],
                retries: 2,
                end: "answered by a1",
                ..Case::default()
            },
            Case {
                name: "latency-based: an unmeasured deployment first, then the fastest",
                deployments: groups("a: a1 a2 a3"),
                settings: settings(|s| s.strategy = Strategy::LatencyBasedRouting),
                stats: vec![
                    ("a1", DeploymentStats { latency_ms: Some(50.0), ..Default::default() }),
                    ("a2", DeploymentStats { latency_ms: Some(20.0), ..Default::default() }),
                ],
                script: &[Fail(503, "busy"), Answer],
                steps: &["try a/a3", "retry a/a2"],
                retries: 1,
                end: "answered by a2",
                ..Case::default()
            },
            Case {
                name: "usage-based: the least used this minute among those under their limits",
                deployments: vec![
                    Deployment { tpm: Some(1_000), ..dep("a", "a1") },
                    Deployment { tpm: Some(100), ..dep("a", "a2") },
                ],
                settings: settings(|s| s.strategy = Strategy::UsageBasedRoutingV2),
                stats: vec![("a1", used(500)), ("a2", used(100))],
                script: &[Answer],
                steps: &["try a/a1"],
                end: "answered by a1",
                ..Case::default()
            },
        ]
    }

    #[test]
    fn scenarios() {
        for case in cases() {
            let run = run(&case);
            assert_eq!(run.steps, case.steps, "{}", case.name);
            assert!(run.end.starts_with(case.end), "{}: ended with {:?}", case.name, run.end);
            assert_eq!(
                (run.retries, run.fallbacks),
                (case.retries, case.fallbacks),
                "{}: retries, fallbacks",
                case.name
            );
        }
    }

    #[test]
    fn a_plan_that_gave_up_gives_the_same_answer_and_ignores_stray_outcomes() {
        let config = config(groups("a: a1"), settings(|s| s.timeout_ms = Some(1_000)));
        let may_use = |_: &str| true;
        let mut plan = RoutePlan::new(&config, "a", START, 10, &may_use);
        assert_eq!(plan.deadline(), Some(START + 1_000));
        let mut sim = sim(START + 1_000);
        let Step::GiveUp(first) = plan.next(&mut sim) else { panic!("the deadline passed") };
        assert_eq!(first.status, 504);
        assert_eq!(plan.report(Outcome::Failed(ApiError::bad_gateway("stray"))), None);
        assert_eq!(plan.next(&mut sim), Step::GiveUp(first));
    }

    #[test]
    fn a_step_whose_outcome_is_not_reported_ends_the_plan() {
        let config = config(groups("a: a1"), RouterSettings::default());
        let may_use = |_: &str| true;
        let mut plan = RoutePlan::new(&config, "a", START, 10, &may_use);
        let mut sim = sim(START);
        assert!(matches!(plan.next(&mut sim), Step::Attempt { retry: false, .. }));
        assert!(matches!(plan.next(&mut sim), Step::GiveUp(e) if e.status == 500));
    }
}
