//! The rollout's decisions, as a pure function of (spec, status, now, action, measurements):
//! which step it is at, the canary's weight, whether it is paused and why, when to look again.
//! No I/O and no clock: everything it knows comes from `status.rollout` and the arguments, so a
//! restarted controller, or a new leader, resumes exactly where the last one left off.
//!
//! One reconcile runs it in two halves: [`Engine::begin`] (start or resume, handle a new
//! action, advance as far as possible without measuring), then — when [`Engine::measurement_due`]
//! says so — [`Engine::record`] with one measurement of every metric, then [`Engine::finish`].

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::action::{self, Action};
use crate::controller::api::duration::{self, InvalidDuration};
use crate::controller::api::rollout::{
    MeasurementOutcome, MetricStatus, PauseReason, Rollout, RolloutPhase, RolloutStatus, RolloutStep,
};

/// Event reasons of the rollout (documented in docs/rollouts.md).
pub mod reason {
    pub const STARTED: &str = "RolloutStarted";
    pub const WEIGHT_STEPPED: &str = "WeightStepped";
    pub const ANALYSIS_FAILED: &str = "AnalysisFailed";
    pub const ROLLED_BACK: &str = "RolledBack";
    pub const PAUSED: &str = "RolloutPaused";
    pub const PROMOTED: &str = "RolloutPromoted";
    pub const SUCCEEDED: &str = "RolloutSucceeded";
    pub const ABORTED: &str = "RolloutAborted";
    /// A `splitscope.dev/rollout-action` that does not apply now (e.g. retry while Progressing)
    /// or names no action.
    pub const ACTION_IGNORED: &str = "RolloutActionIgnored";
}

/// The shortest wait before looking again (status times have one-second precision).
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);

/// The rollout of one valid spec, with its durations parsed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rollout: Rollout,
    pub revision: String,
    /// The stable's and the canary's spec weights together: what the two share.
    pub pair_share: i32,
    /// Time between measurements (None without analysis).
    pub interval: Option<Duration>,
    /// How long the canary may go without a ready pod before the rollout fails.
    pub progress_deadline: Option<Duration>,
    /// Per step: the pause's duration (None for `setWeight` and for `pause: {}`).
    pauses: Vec<Option<Duration>>,
    /// The canary's and the stable's labels in the spec now.
    pub canary_labels: std::collections::BTreeMap<String, String>,
    pub stable_labels: std::collections::BTreeMap<String, String>,
    /// Whether the canary backend has a ready endpoint now. Without one, a share sent to it
    /// would fail (a Gateway answers 503 for the weight of a backend with no endpoints), so the
    /// canary gets 0 % and nothing advances until it has.
    pub canary_ready: bool,
}

impl Plan {
    pub fn new(rollout: &Rollout, revision: String, pair_share: i32) -> Result<Self, InvalidDuration> {
        let interval = rollout
            .analysis
            .as_ref()
            .map(|a| duration::parse(&a.interval))
            .transpose()?;
        let progress_deadline = rollout
            .progress_deadline
            .as_deref()
            .map(duration::parse)
            .transpose()?;
        let pauses = rollout
            .steps
            .iter()
            .map(|s| {
                s.pause
                    .as_ref()
                    .and_then(|p| p.duration.as_deref())
                    .map(duration::parse)
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            rollout: rollout.clone(),
            revision,
            pair_share,
            interval,
            progress_deadline,
            pauses,
            canary_labels: Default::default(),
            stable_labels: Default::default(),
            canary_ready: true,
        })
    }

    fn steps(&self) -> usize {
        self.rollout.steps.len()
    }

    /// The canary's weight once every step is done: the last `setWeight`.
    pub fn final_weight(&self) -> i32 {
        self.rollout
            .steps
            .iter()
            .rev()
            .find_map(|s| s.set_weight)
            .unwrap_or(0)
            .min(self.pair_share)
    }

    fn failure_limit(&self) -> i32 {
        self.rollout.analysis.as_ref().map_or(0, |a| a.failure_limit)
    }

    fn consecutive_error_limit(&self) -> i32 {
        self.rollout
            .analysis
            .as_ref()
            .map_or(0, |a| a.consecutive_error_limit)
    }
}

/// One measurement of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub metric: String,
    pub outcome: MeasurementOutcome,
    /// The value, when Prometheus gave one.
    pub value: Option<f64>,
    /// Why: the range and value, the missing data, or the error.
    pub message: String,
}

/// An Event to publish about the TrafficSplit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutEvent {
    pub reason: &'static str,
    /// The Event's `action`. kube's Recorder folds Events of the same reason and action into
    /// one series that keeps the first note, so each weight gets its own (`SetWeight50`): every
    /// step stays readable in `kubectl describe`.
    pub action: String,
    pub warning: bool,
    pub note: String,
}

/// What one reconcile decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: RolloutStatus,
    pub events: Vec<RolloutEvent>,
    /// Measurements recorded in `status` by this decision (to count in the metrics once the
    /// status is written).
    pub counted: Vec<Measurement>,
    /// When to look again: the next measurement or the end of a timed pause (None once done).
    pub requeue_after: Option<Duration>,
}

/// The rollout state machine for one reconcile.
#[derive(Debug)]
pub struct Engine<'a> {
    plan: &'a Plan,
    now: Timestamp,
    status: RolloutStatus,
    events: Vec<RolloutEvent>,
    counted: Vec<Measurement>,
    /// The phase and pause reason before this reconcile (for the RolloutPaused event).
    before: Option<(RolloutPhase, Option<PauseReason>)>,
    /// Holding the previous rollout's outcome until the stable selects its version: nothing
    /// else happens.
    guarded: bool,
}

impl<'a> Engine<'a> {
    /// Starts a new rollout (no status, or another revision) or resumes `previous`; handles
    /// the annotation's action if it is one not handled yet; unless a measurement is due,
    /// advances as far as the steps allow without one.
    pub fn begin(
        plan: &'a Plan,
        previous: Option<&RolloutStatus>,
        action: Option<&str>,
        now: Timestamp,
    ) -> Self {
        let resumed = previous.filter(|p| p.revision == plan.revision);
        if resumed.is_none()
            && let Some(held) = previous.filter(|p| stable_not_promoted(plan, p))
        {
            return Self::hold_for_the_stable(plan, held, action, now);
        }
        let mut engine = Self {
            plan,
            now,
            status: match resumed {
                Some(p) => p.clone(),
                None => fresh(plan, now, action.map(str::to_string)),
            },
            events: Vec::new(),
            counted: Vec::new(),
            before: resumed.map(|p| (p.phase, p.pause_reason)),
            guarded: false,
        };
        if resumed.is_none() {
            let canary = &plan.rollout.canary;
            engine.event(
                reason::STARTED,
                false,
                format!(
                    "rollout {} of backend {canary} started: {} steps, canary at 0%",
                    plan.revision,
                    plan.steps()
                ),
            );
        }
        // A status edited by hand may point past the steps: clamp, never index out of range.
        engine.status.step_index = engine.status.step_index.clamp(0, engine.steps_i32());
        // The pair's share may have changed in the spec (it is not part of the revision).
        engine.status.canary_weight = engine.status.canary_weight.clamp(0, plan.pair_share);
        engine.status.stable_weight = plan.pair_share - engine.status.canary_weight;

        if let Some(value) = action
            && engine.status.last_action.as_deref() != Some(value)
        {
            engine.status.last_action = Some(value.to_string());
            engine.act(value);
        }
        engine.note_canary_availability();
        // A measurement due now judges the window that just ended, at the weight it had: it is
        // taken first and `record` advances after it. Advancing first would change the weight
        // and restart the window, and the end of a timed pause would never be judged.
        if !engine.measurement_due() {
            engine.advance();
        }
        engine
    }

    /// A new revision after a rollout that succeeded, while the stable backend does not select
    /// the version that carries the traffic now: starting would send the pair's share to the
    /// stable's older version at once (and the canary's Service to the new one). So the
    /// previous rollout's weights and its canary labels stay (`weighted` renders the canary with
    /// them) until the stable is pointed at that version.
    ///
    /// A request made meanwhile is answered at once (`--wait` gets its answer) and not kept for
    /// the new rollout: a `promote` sent now would otherwise skip its first step unjudged later.
    fn hold_for_the_stable(
        plan: &'a Plan,
        previous: &RolloutStatus,
        action: Option<&str>,
        now: Timestamp,
    ) -> Self {
        let mut status = previous.clone();
        let labels = previous
            .canary_labels
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let message = format!(
            "a new rollout of backend {canary} waits: backend {stable} must first select the version \
             that succeeded and now takes the canary's {weight}% ({labels}); point {stable} at those \
             labels, and the new rollout starts from it",
            canary = plan.rollout.canary,
            stable = plan.rollout.stable,
            weight = previous.canary_weight,
        );
        let newly = previous.pause_reason != Some(PauseReason::StableNotPromoted);
        status.phase = RolloutPhase::Paused;
        status.pause_reason = Some(PauseReason::StableNotPromoted);
        status.message = Some(message.clone());
        let mut engine = Self {
            plan,
            now,
            status,
            events: Vec::new(),
            counted: Vec::new(),
            before: Some((previous.phase, previous.pause_reason)),
            guarded: true,
        };
        if newly {
            engine.event(reason::PAUSED, true, message);
        }
        if let Some(value) = action
            && engine.status.last_action.as_deref() != Some(value)
        {
            engine.status.last_action = Some(value.to_string());
            let note = match action::parse(value) {
                Err(unknown) => unknown.to_string(),
                Ok(action) => format!(
                    "{action} ignored: the new rollout of backend {canary} has not started; it starts \
                     once backend {stable} selects the version that succeeded ({labels}). To keep that \
                     version without a new rollout, point {canary} back at those labels",
                    canary = plan.rollout.canary,
                    stable = plan.rollout.stable,
                ),
            };
            engine.event(reason::ACTION_IGNORED, true, note);
        }
        engine
    }

    /// Whether one measurement of every metric is due now.
    pub fn measurement_due(&self) -> bool {
        !self.guarded && self.next_measurement().is_some_and(|at| at <= self.now)
    }

    /// Records one measurement of every metric, then rolls back or advances.
    pub fn record(&mut self, round: Vec<Measurement>) {
        if self.status.phase.is_done() {
            return;
        }
        let limit = self.plan.failure_limit();
        let mut beyond_limit = Vec::new();
        for m in round {
            let Some(status) = self.status.metrics.iter_mut().find(|s| s.name == m.metric) else {
                continue;
            };
            status.last_value = m.value.map(format_value);
            status.last_outcome = Some(m.outcome);
            status.last_message = Some(m.message.clone());
            status.last_measured_at = Some(Time(self.now));
            match m.outcome {
                MeasurementOutcome::Success => {
                    status.successes += 1;
                    status.successes_at_weight += 1;
                    status.consecutive_errors = 0;
                }
                MeasurementOutcome::Failure => {
                    status.failures += 1;
                    status.consecutive_errors = 0;
                }
                MeasurementOutcome::NoData => {
                    status.no_data += 1;
                    status.consecutive_errors = 0;
                }
                MeasurementOutcome::Error => {
                    status.errors += 1;
                    status.consecutive_errors += 1;
                }
            }
            if m.outcome == MeasurementOutcome::Failure {
                let (failures, name) = (status.failures, status.name.clone());
                self.event(
                    reason::ANALYSIS_FAILED,
                    true,
                    format!(
                        "metric {name}: {} (failure {failures}, {limit} tolerated)",
                        m.message
                    ),
                );
                if failures > limit {
                    beyond_limit.push(format!("{name} ({})", m.message));
                }
            }
            self.counted.push(m);
        }
        if !beyond_limit.is_empty() {
            self.roll_back(&beyond_limit.join("; "));
            return;
        }
        self.advance();
    }

    /// The status to write, the Events, and when to look again.
    pub fn finish(mut self) -> Decision {
        if self.guarded {
            // Only a change of the spec (the stable's labels) lifts it.
            return Decision {
                status: self.status,
                events: self.events,
                counted: Vec::new(),
                requeue_after: None,
            };
        }
        self.settle_phase();
        let requeue_after = self.requeue_after();
        Decision {
            status: self.status,
            events: self.events,
            counted: self.counted,
            requeue_after,
        }
    }

    fn event(&mut self, reason: &'static str, warning: bool, note: String) {
        self.events.push(RolloutEvent {
            reason,
            action: "Rollout".into(),
            warning,
            note,
        });
    }

    fn act(&mut self, value: &str) {
        let action = match action::parse(value) {
            Ok(a) => a,
            Err(unknown) => {
                self.event(reason::ACTION_IGNORED, true, unknown.to_string());
                return;
            }
        };
        let phase = self.status.phase;
        let ignored = |why: String| format!("{action} ignored: {why}");
        match action {
            Action::Abort if phase == RolloutPhase::Aborted => {
                let note = ignored("the rollout is already Aborted".into());
                self.event(reason::ACTION_IGNORED, true, note);
            }
            Action::Abort => {
                self.set_canary(0);
                self.status.phase = RolloutPhase::Aborted;
                self.status.pause_reason = None;
                let message = format!(
                    "aborted at step {} of {}: canary {} back to 0%, stable {} at {}%",
                    self.step_number(),
                    self.plan.steps(),
                    self.plan.rollout.canary,
                    self.plan.rollout.stable,
                    self.plan.pair_share
                );
                self.status.message = Some(message.clone());
                self.event(reason::ABORTED, true, message);
            }
            Action::Retry if matches!(phase, RolloutPhase::Failed | RolloutPhase::Aborted) => {
                let last_action = self.status.last_action.clone();
                self.status = fresh(self.plan, self.now, last_action);
                let note = format!(
                    "rollout {} retried after {}: back to step 1 of {}, canary at 0%",
                    self.plan.revision,
                    phase.as_str(),
                    self.plan.steps()
                );
                self.event(reason::STARTED, false, note);
            }
            Action::Retry => {
                let note = ignored(format!(
                    "only a Failed or Aborted rollout can be retried; this one is {}",
                    phase.as_str()
                ));
                self.event(reason::ACTION_IGNORED, true, note);
            }
            Action::Promote | Action::PromoteFull if phase.is_done() => {
                let note = ignored(format!(
                    "the rollout is {} (retry restarts a Failed or Aborted one)",
                    phase.as_str()
                ));
                self.event(reason::ACTION_IGNORED, true, note);
            }
            Action::Promote if self.current_step().is_none() => {
                // Promoted to the end while the canary had no ready pod: it succeeds once it has.
                let note = ignored(format!(
                    "every step is done; the rollout succeeds once backend {} has a ready pod",
                    self.plan.rollout.canary
                ));
                self.event(reason::ACTION_IGNORED, true, note);
            }
            Action::Promote => {
                let note = format!(
                    "promoted past step {} of {} ({})",
                    self.step_number(),
                    self.plan.steps(),
                    self.describe_step()
                );
                self.next_step();
                self.event(reason::PROMOTED, false, note);
            }
            Action::PromoteFull => {
                let weight = self.plan.final_weight();
                self.status.step_index = self.steps_i32();
                self.status.step_started_at = Some(Time(self.now));
                if self.status.canary_weight != weight {
                    self.set_canary(weight);
                }
                let note = format!("fully promoted: every remaining step skipped, canary at {weight}%");
                self.event(reason::PROMOTED, false, note);
            }
        }
    }

    /// Moves through the steps that are done: `setWeight` once every metric had a successful
    /// measurement at that weight, a timed pause once it elapsed (and the same holds), never a
    /// `pause: {}` (only a promotion leaves it).
    fn advance(&mut self) {
        if self.status.phase.is_done() {
            return;
        }
        if !self.plan.canary_ready {
            if self.status.canary_weight > 0 {
                self.set_canary(0);
            }
            if let Some((deadline, since)) = self.progress_deadline_passed() {
                let message = format!(
                    "rolled back at step {} of {}: backend {} had no ready pod for {deadline} (since {since}), \
                     its progressDeadline; canary {} at 0%, stable {} at {}%",
                    self.step_number(),
                    self.plan.steps(),
                    self.plan.rollout.canary,
                    self.plan.rollout.canary,
                    self.plan.rollout.stable,
                    self.plan.pair_share
                );
                self.fail(message);
            }
            return;
        }
        // Back from a spell without canary pods: the weight of the step it holds at, or, promoted
        // past the last step meanwhile, the final weight.
        let held = self.held_weight();
        if self.status.canary_weight != held && self.current_step().is_none_or(|s| s.set_weight.is_none()) {
            self.set_canary(held);
        }
        while !self.status.phase.is_done() {
            let Some(step) = self.current_step() else {
                self.succeed();
                return;
            };
            if let Some(weight) = step.set_weight {
                let weight = weight.min(self.plan.pair_share);
                if self.status.canary_weight != weight {
                    self.set_canary(weight);
                    let note = format!(
                        "step {} of {}: canary {} at {weight}%, stable {} at {}%",
                        self.step_number(),
                        self.plan.steps(),
                        self.plan.rollout.canary,
                        self.plan.rollout.stable,
                        self.status.stable_weight
                    );
                    self.events.push(RolloutEvent {
                        reason: reason::WEIGHT_STEPPED,
                        action: format!("SetWeight{weight}"),
                        warning: false,
                        note,
                    });
                }
                if !self.analysis_passed_at_weight() {
                    return;
                }
            } else {
                let Some(end) = self.pause_end() else {
                    return; // pause: {} — until promoted
                };
                if self.now < end || !self.analysis_passed_at_weight() {
                    return;
                }
            }
            self.next_step();
        }
    }

    fn succeed(&mut self) {
        self.status.phase = RolloutPhase::Succeeded;
        self.status.pause_reason = None;
        let message = format!(
            "all {} steps done: canary {} at {}%, stable {} at {}%",
            self.plan.steps(),
            self.plan.rollout.canary,
            self.status.canary_weight,
            self.plan.rollout.stable,
            self.status.stable_weight
        );
        self.status.message = Some(message.clone());
        self.event(reason::SUCCEEDED, false, message);
    }

    fn roll_back(&mut self, why: &str) {
        let message = format!(
            "rolled back at step {} of {}: {why} failed beyond failureLimit {}; canary {} at 0%, stable {} at {}%",
            self.step_number(),
            self.plan.steps(),
            self.plan.failure_limit(),
            self.plan.rollout.canary,
            self.plan.rollout.stable,
            self.plan.pair_share
        );
        self.fail(message);
    }

    /// Failed: the canary back to 0 %, the stable at the pair's share.
    fn fail(&mut self, message: String) {
        self.set_canary(0);
        self.status.phase = RolloutPhase::Failed;
        self.status.pause_reason = None;
        self.status.canary_unavailable_since = None;
        self.status.message = Some(message.clone());
        self.event(reason::ROLLED_BACK, true, message);
    }

    /// Keeps `canaryUnavailableSince` while the canary has no ready pod and the rollout runs
    /// (a restart or a new leader goes on counting from it), and clears it otherwise.
    fn note_canary_availability(&mut self) {
        if self.plan.canary_ready || self.status.phase.is_done() {
            self.status.canary_unavailable_since = None;
        } else if self.status.canary_unavailable_since.is_none() {
            self.status.canary_unavailable_since = Some(Time(self.now));
        }
    }

    /// When the canary, without a ready pod since `canaryUnavailableSince`, passes
    /// `progressDeadline` (None without either).
    fn progress_deadline_end(&self) -> Option<Timestamp> {
        let deadline = self.plan.progress_deadline?;
        let since = self.status.canary_unavailable_since.as_ref()?.0;
        Some(add(since, deadline))
    }

    /// Once that time has come: the deadline as the spec writes it, and since when.
    fn progress_deadline_passed(&self) -> Option<(&'a str, Timestamp)> {
        let end = self.progress_deadline_end()?;
        let since = self.status.canary_unavailable_since.as_ref()?.0;
        let plan: &'a Plan = self.plan;
        (self.now >= end).then(|| (plan.rollout.progress_deadline.as_deref().unwrap_or("?"), since))
    }

    /// Progressing or Paused (and why), once the steps have moved; a RolloutPaused Event when
    /// it newly pauses or pauses for another reason.
    fn settle_phase(&mut self) {
        if self.status.phase.is_done() {
            return;
        }
        let awaiting_promotion = self.current_pause_is_indefinite();
        let hold = self.canary_hold().or_else(|| self.analysis_hold());
        let (phase, pause_reason, message) = match (awaiting_promotion && self.plan.canary_ready, hold) {
            (true, hold) => {
                let mut message = format!(
                    "waiting at step {} of {} (pause: {{}}) for `splitscope rollout promote`",
                    self.step_number(),
                    self.plan.steps()
                );
                if let Some((_, why)) = hold {
                    message.push_str(&format!("; meanwhile {why}"));
                }
                (
                    RolloutPhase::Paused,
                    Some(PauseReason::AwaitingPromotion),
                    message,
                )
            }
            (false, Some((why_reason, why))) => (RolloutPhase::Paused, Some(why_reason), why),
            (false, None) => (
                RolloutPhase::Progressing,
                None,
                format!(
                    "step {} of {} ({}): canary at {}%",
                    self.step_number(),
                    self.plan.steps(),
                    self.describe_step(),
                    self.status.canary_weight
                ),
            ),
        };
        self.status.phase = phase;
        self.status.pause_reason = pause_reason;
        self.status.message = Some(message.clone());
        let newly = self.before != Some((phase, pause_reason));
        if phase == RolloutPhase::Paused && newly {
            let warning = pause_reason != Some(PauseReason::AwaitingPromotion);
            self.event(reason::PAUSED, warning, message);
        }
    }

    /// A canary without ready pods holds the rollout, at 0 %.
    fn canary_hold(&self) -> Option<(PauseReason, String)> {
        (!self.plan.canary_ready).then(|| {
            let mut message = format!(
                "backend {} has no ready pods: it gets 0% and step {} of {} waits until it has",
                self.plan.rollout.canary,
                self.step_number(),
                self.plan.steps()
            );
            if let (Some(end), Some(deadline)) = (
                self.progress_deadline_end(),
                self.plan.rollout.progress_deadline.as_deref(),
            ) {
                message.push_str(&format!(", or rolls back at {end} (progressDeadline {deadline})"));
            }
            (PauseReason::CanaryUnavailable, message)
        })
    }

    /// Errors beyond the limit, else no data, hold the rollout (never roll it back).
    fn analysis_hold(&self) -> Option<(PauseReason, String)> {
        let limit = self.plan.consecutive_error_limit();
        if let Some(m) = self.status.metrics.iter().find(|m| m.consecutive_errors > limit) {
            return Some((
                PauseReason::AnalysisError,
                format!(
                    "metric {} failed to measure {} times in a row (consecutiveErrorLimit {limit}): {}",
                    m.name,
                    m.consecutive_errors,
                    m.last_message.as_deref().unwrap_or("no message")
                ),
            ));
        }
        self.status
            .metrics
            .iter()
            .find(|m| m.last_outcome == Some(MeasurementOutcome::NoData))
            .map(|m| {
                (
                    PauseReason::NoData,
                    format!(
                        "metric {} has no data: {} (the step resumes when data comes)",
                        m.name,
                        m.last_message.as_deref().unwrap_or("no message")
                    ),
                )
            })
    }

    /// The weight the steps up to the current one give the canary: the last `setWeight` before
    /// it (0 before the first), within the pair's share.
    fn held_weight(&self) -> i32 {
        let upto = usize::try_from(self.status.step_index).unwrap_or(0);
        self.plan
            .rollout
            .steps
            .iter()
            .take(upto)
            .rev()
            .find_map(|s| s.set_weight)
            .unwrap_or(0)
            .min(self.plan.pair_share)
    }

    fn analysis_passed_at_weight(&self) -> bool {
        self.status.metrics.iter().all(|m| m.successes_at_weight > 0)
    }

    /// The step the rollout is at (None once every step is done).
    fn current_step(&self) -> Option<&'a RolloutStep> {
        let plan: &'a Plan = self.plan;
        plan.rollout.step(self.status.step_index)
    }

    /// When the current step's timed pause ends (None for `setWeight` and `pause: {}`).
    fn pause_end(&self) -> Option<Timestamp> {
        let pause = usize::try_from(self.status.step_index)
            .ok()
            .and_then(|i| self.plan.pauses.get(i).copied().flatten())?;
        let started = self.status.step_started_at.as_ref().map_or(self.now, |t| t.0);
        Some(add(started, pause))
    }

    fn current_pause_is_indefinite(&self) -> bool {
        self.current_step()
            .is_some_and(|s| s.pause.as_ref().is_some_and(|p| p.duration.is_none()))
    }

    /// The canary at `weight`, the stable at the rest of the pair's share. Only a change of the
    /// weight restarts the measurement window (an abort or rollback at 0 % changes nothing).
    fn set_canary(&mut self, weight: i32) {
        if weight != self.status.canary_weight {
            self.status.weight_changed_at = Some(Time(self.now));
            for m in &mut self.status.metrics {
                m.successes_at_weight = 0;
            }
        }
        self.status.canary_weight = weight;
        self.status.stable_weight = self.plan.pair_share - weight;
    }

    fn next_step(&mut self) {
        self.status.step_index += 1;
        self.status.step_started_at = Some(Time(self.now));
    }

    /// 1-based, as people count.
    fn step_number(&self) -> i32 {
        (self.status.step_index + 1).min(self.steps_i32())
    }

    fn steps_i32(&self) -> i32 {
        i32::try_from(self.plan.steps()).unwrap_or(i32::MAX)
    }

    fn describe_step(&self) -> String {
        self.current_step()
            .map_or_else(|| "done".into(), RolloutStep::describe)
    }

    /// When the next measurement is due: one interval after the later of the last measurement
    /// and the last weight change (so its whole window sees the current weight).
    fn next_measurement(&self) -> Option<Timestamp> {
        let interval = self.plan.interval?;
        if self.status.phase.is_done() {
            return None;
        }
        let last = self
            .status
            .metrics
            .iter()
            .filter_map(|m| m.last_measured_at.as_ref().map(|t| t.0))
            .max();
        let since = self.status.weight_changed_at.as_ref().map(|t| t.0);
        let base = match (last, since) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b).unwrap_or(self.now),
        };
        Some(add(base, interval))
    }

    fn requeue_after(&self) -> Option<Duration> {
        if self.status.phase.is_done() {
            return None;
        }
        let deadline = (!self.plan.canary_ready)
            .then(|| self.progress_deadline_end())
            .flatten();
        // A pause that has ended waits for a measurement or for canary pods, not for itself:
        // looking again at once would only repeat this decision.
        let pause_end = self.pause_end().filter(|end| *end > self.now);
        let next = [self.next_measurement(), pause_end, deadline]
            .into_iter()
            .flatten()
            .min()?;
        let wait = next.duration_since(self.now);
        let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
        Some(wait.max(MIN_REQUEUE))
    }
}

/// A rollout at its start: step 1, canary at 0, every count zero.
/// Whether `previous` succeeded with the canary carrying traffic (or is already held for this),
/// and the stable does not select the canary labels it succeeded with. Statuses from before
/// the labels were recorded are never held.
fn stable_not_promoted(plan: &Plan, previous: &RolloutStatus) -> bool {
    let succeeded = previous.phase == RolloutPhase::Succeeded
        || previous.pause_reason == Some(PauseReason::StableNotPromoted);
    succeeded
        && previous.canary_weight > 0
        && previous
            .canary_labels
            .as_ref()
            .is_some_and(|labels| *labels != plan.stable_labels)
}

fn fresh(plan: &Plan, now: Timestamp, last_action: Option<String>) -> RolloutStatus {
    RolloutStatus {
        phase: RolloutPhase::Progressing,
        revision: plan.revision.clone(),
        step_index: 0,
        step_started_at: Some(Time(now)),
        canary_weight: 0,
        stable_weight: plan.pair_share,
        weight_changed_at: Some(Time(now)),
        pause_reason: None,
        canary_unavailable_since: None,
        message: None,
        last_action,
        canary_labels: Some(plan.canary_labels.clone()),
        metrics: plan
            .rollout
            .analysis
            .iter()
            .flat_map(|a| a.metrics.iter().map(|m| MetricStatus::new(&m.name)))
            .collect(),
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Values as status shows them: up to six significant decimals, `NaN`/`+Inf`/`-Inf` spelled out.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        let s = format!("{v:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" { "0".into() } else { s.to_string() }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
