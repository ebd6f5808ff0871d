//! Claims due deliveries, normalizes them through their source, and hands the journal one
//! completion per delivery: ledger changes and status in one transaction (exactly-once effect).
//! Failures retry with exponential backoff and jitter and go dead after the configured number
//! of attempts; permanent errors park as `failed` at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::clock::{SharedClock, Timestamp};
use crate::config::ProcessorSettings;
use crate::journal::query::LedgerQuery;
use crate::journal::{
    Appended, ClaimRequest, ClaimedDelivery, Completed, Completion, CompletionOutcome,
    DeliveryStatus, FirstAttempt, JournalError, NewDelivery, RetryPlan, Storage,
};
use crate::ledger::{FollowUp, LedgerChange, OwedFollowUps, RowChange};
use crate::lookup::{LookupAnswer, ProviderApi};
use crate::metrics::{Metrics, ProcessOutcome};
use crate::sources::{Judgement, Normalized, Registry};
use crate::telemetry::LogLimiter;

pub struct Processor {
    storage: Storage,
    sources: Registry,
    clock: SharedClock,
    settings: ProcessorSettings,
    metrics: Arc<Metrics>,
    /// Asks providers' APIs about `verifying` deliveries.
    api: ProviderApi,
    /// Bumped after every batch, so waiters re-check the backlog without polling.
    progress: watch::Sender<u64>,
}

/// How often a running processor looks for follow-ups that committed rows still owe (besides
/// once at start): often enough that an order a failed append left behind is placed within a
/// minute, rarely enough that the scan costs nothing.
pub const FOLLOW_UP_SWEEP: Duration = Duration::from_secs(60);

/// Rows read per page while sweeping for owed follow-ups.
const SWEEP_PAGE: u32 = 500;

/// The answer to one delivery's lookup, or why there is none yet.
type LookupOutcome = Result<LookupAnswer, String>;

impl Processor {
    pub fn new(
        storage: Storage,
        sources: Registry,
        clock: SharedClock,
        settings: ProcessorSettings,
        metrics: Arc<Metrics>,
        api: ProviderApi,
    ) -> Self {
        Self {
            storage,
            sources,
            clock,
            settings,
            metrics,
            api,
            progress: watch::Sender::new(0),
        }
    }

    /// A receiver that changes after every processed batch.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Runs until `shutdown`: journals the follow-ups committed rows still owe (at start and
    /// every [`FOLLOW_UP_SWEEP`]), drains what is due, then sleeps until new deliveries
    /// arrive, a retry falls due, or the idle poll interval passes.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let appended = self.storage.log.appended_signal();
        let mut next_sweep = Instant::now();
        while !shutdown.is_cancelled() {
            if Instant::now() >= next_sweep {
                self.sweep_follow_ups().await;
                next_sweep = Instant::now() + FOLLOW_UP_SWEEP;
            }
            let pause = match self.run_pending().await {
                Ok(_) => self.time_until_next_due().await,
                Err(error) => {
                    // Once per poll while the journal is away: at most one line a second.
                    static LOG: LogLimiter = LogLimiter::new();
                    if let Some(suppressed) = LOG.allow() {
                        tracing::error!(%error, suppressed, "processor cannot reach the journal; retrying");
                    }
                    self.settings.idle_poll
                }
            };
            tokio::select! {
                () = appended.notified() => {
                    tokio::time::sleep(self.settings.batch_window).await;
                }
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => {}
            }
        }
    }

    /// Processes batches until nothing is due now; returns how many deliveries were attempted.
    pub async fn run_pending(&self) -> Result<usize, JournalError> {
        let mut total = 0;
        loop {
            let attempted = self.run_batch().await?;
            total += attempted;
            if attempted < self.settings.batch_size {
                self.publish_backlog().await;
                return Ok(total);
            }
        }
    }

    async fn publish_backlog(&self) {
        if let Ok(backlog) = self.storage.read.backlog(self.clock.now()).await {
            self.metrics.set_backlog(backlog.pending);
        }
        self.progress.send_modify(|generation| *generation += 1);
    }

    async fn time_until_next_due(&self) -> Duration {
        let now = self.clock.now();
        match self.storage.log.next_due().await {
            Ok(Some(due)) if due > now => {
                Duration::from_micros((due.micros() - now.micros()) as u64)
                    .min(self.settings.idle_poll)
            }
            Ok(Some(_)) => Duration::ZERO,
            _ => self.settings.idle_poll,
        }
    }

    async fn run_batch(&self) -> Result<usize, JournalError> {
        let claimed = self
            .storage
            .log
            .claim_due(ClaimRequest {
                now: self.clock.now(),
                limit: self.settings.batch_size,
                lease: self.settings.lease,
            })
            .await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let count = claimed.len();
        let started = Instant::now();
        let lookups = self.look_up(&claimed).await;
        let completions = self.attempt_all(claimed, lookups).await;
        let attempted: Vec<Attempted> = completions
            .iter()
            .map(|(delivery, completion)| Attempted::new(delivery, completion, true))
            .collect();
        let completions: Vec<Completion> = completions
            .into_iter()
            .map(|(_, completion)| completion)
            .collect();
        let follow_ups = rows_of(&completions);
        let results = self.storage.log.complete(completions).await?;
        // Tests stop (and kill) the process here: committed, follow-ups not yet journaled.
        fail::fail_point!("processor::after_commit_before_follow_ups");
        self.journal_follow_ups(follow_ups, &results).await;
        let elapsed = started.elapsed();
        for _ in &results {
            self.metrics.attempt_duration.observe(elapsed);
        }
        self.record(&attempted, &results);
        self.progress.send_modify(|generation| *generation += 1);
        Ok(count)
    }

    /// Makes the provider API calls that `verifying` deliveries need, all at once; `None` for
    /// the others. A call that fails is the attempt's error (retried with backoff).
    async fn look_up(&self, claimed: &[ClaimedDelivery]) -> Vec<Option<LookupOutcome>> {
        let calls = claimed.iter().map(|delivery| {
            self.look_up_one(delivery)
                .instrument(delivery_span(delivery, delivery.attempts + 1))
        });
        futures_util::future::join_all(calls).await
    }

    async fn look_up_one(&self, delivery: &ClaimedDelivery) -> Option<LookupOutcome> {
        let source = self.sources.get(&delivery.source)?;
        if !delivery.verifying && !source.verified_by_lookup(delivery) {
            return None;
        }
        let outcome = match source.lookup(delivery, self.clock.now()) {
            Ok(lookup) => self
                .api
                .call(&lookup)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        Some(outcome)
    }

    /// Normalizes a batch on the background thread: parsing is CPU work that yields to ingest.
    async fn attempt_all(
        &self,
        claimed: Vec<ClaimedDelivery>,
        lookups: Vec<Option<LookupOutcome>>,
    ) -> Vec<(ClaimedDelivery, Completion)> {
        let sources = self.sources.clone();
        let clock = self.clock.clone();
        let settings = self.settings.clone();
        let work = move || {
            claimed
                .into_iter()
                .zip(lookups)
                .map(|(delivery, lookup)| {
                    let completion =
                        attempt(&sources, &settings, clock.now(), &delivery, lookup.as_ref());
                    (delivery, completion)
                })
                .collect()
        };
        match crate::background::run(work).await {
            Ok(completions) => completions,
            Err(error) => {
                tracing::error!(%error, "normalization failed");
                Vec::new()
            }
        }
    }

    /// Journals what committed changes asked for ([`RowChange::follow_up`]), once their
    /// completion is known to have committed. A follow-up lost here (a failed append, a crash
    /// before it) is still owed by its row, and the next sweep journals it
    /// ([`Self::sweep_follow_ups`]).
    async fn journal_follow_ups(&self, rows: Vec<(String, Vec<RowOf>)>, results: &[Completed]) {
        for ((source, changes), result) in rows.into_iter().zip(results) {
            if *result != Completed::Processed {
                continue;
            }
            for follow_up in changes.iter().filter_map(|change| change.follow_up()) {
                if let Err(error) = self.journal_follow_up(&source, follow_up).await {
                    tracing::error!(source = %source, %error, "a follow-up could not be journaled; the next sweep journals it");
                }
            }
        }
    }

    /// One follow-up as a `verifying` delivery of `source`, deduplicated by its key.
    async fn journal_follow_up(
        &self,
        source: &str,
        follow_up: FollowUp,
    ) -> Result<Appended, JournalError> {
        let delivery = NewDelivery {
            source: source.to_owned(),
            event_id: None,
            event_type: follow_up.event_type,
            dedup_key: follow_up.dedup_key,
            received_at: self.clock.now(),
            headers_json: r#"{":method":"POST",":path":"(follow-up)"}"#.to_owned(),
            body: Bytes::from(follow_up.body),
            status: DeliveryStatus::Verifying,
            last_error: None,
        };
        self.storage.log.append(delivery).await
    }

    /// Journals every follow-up that committed rows still owe ([`Source::owed_follow_ups`]):
    /// those already journaled come back as duplicates and change nothing; those lost between
    /// a commit and its append are journaled now. Returns how many were new. A failure is
    /// logged; the next sweep tries again.
    ///
    /// [`Source::owed_follow_ups`]: crate::sources::Source::owed_follow_ups
    pub async fn sweep_follow_ups(&self) -> usize {
        let mut journaled = 0;
        for source in self.sources.iter() {
            for owed in source.owed_follow_ups() {
                match self.sweep_one(source.name(), &owed).await {
                    Ok(count) => journaled += count,
                    Err(error) => tracing::error!(
                        source = %source.name(),
                        table = owed.table.name,
                        %error,
                        "owed follow-ups could not be swept; the next sweep tries again"
                    ),
                }
            }
        }
        if journaled > 0 {
            tracing::warn!(
                journaled,
                "follow-ups lost before they were journaled were journaled by the sweep"
            );
        }
        journaled
    }

    /// Pages through one table's rows that owe a follow-up, journaling each one's.
    async fn sweep_one(&self, source: &str, owed: &OwedFollowUps) -> Result<usize, JournalError> {
        let mut journaled = 0;
        let mut after = None;
        loop {
            let query = LedgerQuery {
                table: owed.table,
                equals: owed.equals.clone(),
                text: None,
                after: after.take(),
                limit: SWEEP_PAGE,
            };
            let key_positions = query.key_positions();
            let rows = self.storage.read.ledger_rows(query).await?;
            for row in &rows {
                let Some(follow_up) = (owed.owed)(row) else {
                    tracing::error!(
                        source,
                        table = owed.table.name,
                        "a row that owes a follow-up cannot be read"
                    );
                    continue;
                };
                if let Appended::Stored(_) = self.journal_follow_up(source, follow_up).await? {
                    journaled += 1;
                }
            }
            match rows.last() {
                Some(last) if rows.len() == SWEEP_PAGE as usize => {
                    after = Some(
                        key_positions
                            .iter()
                            .filter_map(|at| last.get(*at).cloned())
                            .collect(),
                    );
                }
                _ => return Ok(journaled),
            }
        }
    }

    fn record(&self, attempted: &[Attempted], results: &[Completed]) {
        let now = self.clock.now();
        for (attempt, result) in attempted.iter().zip(results) {
            record_outcome(
                &self.metrics,
                now,
                attempt,
                result,
                self.settings.max_attempts,
            );
        }
    }

    /// The first attempts the embedded journal makes as deliveries land
    /// ([`crate::journal::DeliveryLog::attempt_on_arrival`]), by this processor's rules.
    pub fn first_attempts(&self) -> Arc<dyn FirstAttempt> {
        Arc::new(OnArrival {
            sources: self.sources.clone(),
            clock: self.clock.clone(),
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

/// Counts one landed completion and logs it if an operator must hear about it: a retry
/// scheduled (WARN, with its time), a delivery parked as failed or rejected (WARN), a delivery
/// gone dead (ERROR), each inside the delivery's span.
fn record_outcome(
    metrics: &Metrics,
    now: Timestamp,
    attempt: &Attempted,
    result: &Completed,
    max_attempts: u32,
) {
    let outcome = match result {
        Completed::Processed => ProcessOutcome::Processed,
        Completed::Ignored => ProcessOutcome::Ignored,
        Completed::Failed(RetryPlan::RetryAt(_)) => ProcessOutcome::Retry,
        Completed::Failed(RetryPlan::Failed) => ProcessOutcome::Failed,
        Completed::Failed(RetryPlan::Dead) => ProcessOutcome::Dead,
        Completed::Rejected => ProcessOutcome::Rejected,
        Completed::Stale => return,
    };
    if matches!(outcome, ProcessOutcome::Processed | ProcessOutcome::Ignored) {
        let lag = (now.micros() - attempt.received_at.micros()).max(0) as u64;
        metrics.processing_lag.observe(Duration::from_micros(lag));
    }
    if let Some(source) = metrics.source(&attempt.source) {
        source.processed(outcome);
    }
    attempt.log(result, max_attempts);
}

/// The processor's first attempt, made by the journal where it lands a delivery. Deliveries
/// a provider's API must prove are left to the processor, which makes the lookups, and so are
/// those whose changes ask for a follow-up: the processor journals follow-ups after its own
/// commit, and the journal's writer cannot append to the log it is projecting.
struct OnArrival {
    sources: Registry,
    clock: SharedClock,
    settings: ProcessorSettings,
    metrics: Arc<Metrics>,
}

impl FirstAttempt for OnArrival {
    fn attempt(&self, delivery: &ClaimedDelivery) -> Option<Completion> {
        let source = self.sources.get(&delivery.source)?;
        if source.verified_by_lookup(delivery) {
            return None;
        }
        let completion = attempt(
            &self.sources,
            &self.settings,
            self.clock.now(),
            delivery,
            None,
        );
        let asks_for_follow_up = rows_of(std::slice::from_ref(&completion))
            .iter()
            .flat_map(|(_, rows)| rows)
            .any(|row| row.follow_up().is_some());
        (!asks_for_follow_up).then_some(completion)
    }

    /// The attempt's duration is its normalization: it commits with the projection's batch.
    fn completed(&self, delivery: &ClaimedDelivery, completion: &Completion, result: &Completed) {
        let duration = Duration::from_micros(completion.duration_micros.max(0) as u64);
        self.metrics.attempt_duration.observe(duration);
        // Only a failure is logged (in the delivery's span): most first attempts need no span.
        let logged = matches!(result, Completed::Failed(_) | Completed::Rejected);
        let attempted = Attempted::new(delivery, completion, logged);
        record_outcome(
            &self.metrics,
            self.clock.now(),
            &attempted,
            result,
            self.settings.max_attempts,
        );
    }
}

type RowOf = Arc<dyn RowChange>;

/// Each completion's source and the row changes it applies, kept to ask them for follow-ups
/// once committed.
fn rows_of(completions: &[Completion]) -> Vec<(String, Vec<RowOf>)> {
    completions
        .iter()
        .map(|completion| {
            let rows = match &completion.outcome {
                CompletionOutcome::Apply(changes) => changes
                    .iter()
                    .filter_map(|change| match change {
                        LedgerChange::Row(row) => Some(Arc::clone(row)),
                        LedgerChange::Sale(_) => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            (completion.source.clone(), rows)
        })
        .collect()
}

/// The span every line about one delivery's attempt is logged in.
fn delivery_span(delivery: &ClaimedDelivery, attempt: u32) -> tracing::Span {
    tracing::info_span!(
        "delivery",
        delivery.id = %delivery.id,
        source = %delivery.source,
        event.r#type = %delivery.event_type,
        attempt,
    )
}

/// What the log needs of one attempt once its completion has landed.
struct Attempted {
    span: tracing::Span,
    source: String,
    received_at: Timestamp,
    /// Why it failed, when it did before reaching the journal (a ledger apply that fails is
    /// the journal's to say).
    error: Option<String>,
}

impl Attempted {
    /// Without `span`, whatever it logs is logged outside the delivery's span.
    fn new(delivery: &ClaimedDelivery, completion: &Completion, span: bool) -> Self {
        let error = match &completion.outcome {
            CompletionOutcome::Fail { error, .. } | CompletionOutcome::Reject(error) => {
                Some(error.clone())
            }
            CompletionOutcome::Apply(_) | CompletionOutcome::Ignore(_) => None,
        };
        Self {
            span: if span {
                delivery_span(delivery, delivery.attempts + 1)
            } else {
                tracing::Span::none()
            },
            source: delivery.source.clone(),
            received_at: delivery.received_at,
            error,
        }
    }

    fn log(&self, result: &Completed, max_attempts: u32) {
        let _entered = self.span.enter();
        let error = self
            .error
            .as_deref()
            .unwrap_or("the ledger change could not be applied");
        match result {
            Completed::Failed(RetryPlan::RetryAt(at)) => tracing::warn!(
                next_attempt_at = %at.to_rfc3339(),
                error,
                "delivery failed; retry scheduled"
            ),
            Completed::Failed(RetryPlan::Dead) => tracing::error!(
                error,
                max_attempts,
                "delivery is dead: every attempt failed; replay it once the cause is fixed"
            ),
            Completed::Failed(RetryPlan::Failed) => tracing::warn!(
                error,
                "delivery failed permanently (kept as failed; replay it after a fix)"
            ),
            Completed::Rejected => {
                tracing::warn!(error, "delivery rejected: the provider's API disproved it")
            }
            Completed::Processed | Completed::Ignored | Completed::Stale => {}
        }
    }
}

/// One attempt at one delivery: what the journal should record. A `verifying` delivery is
/// judged from its lookup's answer; a lookup that failed is a failed attempt, retried.
fn attempt(
    sources: &Registry,
    settings: &ProcessorSettings,
    now: Timestamp,
    delivery: &ClaimedDelivery,
    lookup: Option<&LookupOutcome>,
) -> Completion {
    let started = Instant::now();
    let attempt_number = delivery.attempts + 1;
    // Nothing a normalization or judgement runs logs above DEBUG (sources never log), so
    // below it the span would wrap no line; building one cost as much as reading a sale.
    let _entered = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| delivery_span(delivery, attempt_number).entered());
    let retry = retry_plan(settings, attempt_number, now);
    let normalized = match (sources.get(&delivery.source), lookup) {
        (None, _) => Err(CompletionOutcome::Fail {
            error: format!("no source named {:?} is configured", delivery.source),
            plan: retry,
        }),
        (Some(_), Some(Err(error))) => Err(CompletionOutcome::Fail {
            error: error.clone(),
            plan: retry,
        }),
        (Some(source), Some(Ok(answer))) => match source.judge(delivery, answer) {
            Ok(Judgement::Genuine(normalized)) => Ok(Ok(normalized)),
            Ok(Judgement::Forged(reason)) => Err(CompletionOutcome::Reject(reason)),
            Err(error) => Ok(Err(error)),
        },
        (Some(source), None) => Ok(source.normalize(delivery)),
    };
    let outcome = match normalized {
        Err(outcome) => outcome,
        Ok(normalized) => match normalized {
            Ok(Normalized::Changes(changes)) => CompletionOutcome::Apply(changes),
            Ok(Normalized::Ignore(reason)) => CompletionOutcome::Ignore(reason),
            Err(error) => {
                let plan = if error.is_permanent() {
                    RetryPlan::Failed
                } else {
                    retry
                };
                tracing::debug!(error = %error, "delivery could not be normalized");
                CompletionOutcome::Fail {
                    error: error.to_string(),
                    plan,
                }
            }
        },
    };
    Completion {
        delivery: delivery.id,
        source: delivery.source.clone(),
        claim: delivery.claim,
        claimed_attempts: delivery.attempts,
        received_at: delivery.received_at,
        started_at: now,
        duration_micros: started.elapsed().as_micros() as i64,
        outcome,
        if_apply_fails: retry,
        // A delivery proven by lookup waits for its retry as `verifying`.
        verifying: delivery.verifying || lookup.is_some(),
    }
}

/// After attempt `attempt_number` fails: dead once the attempts are used up, else again after
/// `base * 2^(n-1)` capped at `max`, with equal jitter (half fixed, half random) so that a burst
/// of failures does not retry in lockstep.
pub fn retry_plan(settings: &ProcessorSettings, attempt_number: u32, now: Timestamp) -> RetryPlan {
    if attempt_number >= settings.max_attempts {
        return RetryPlan::Dead;
    }
    let exponent = attempt_number.saturating_sub(1).min(30);
    let delay = settings
        .backoff_base
        .saturating_mul(1u32 << exponent)
        .min(settings.backoff_max);
    let half = delay.as_micros() as u64 / 2;
    let jittered = half + fastrand::u64(0..=half);
    RetryPlan::RetryAt(Timestamp(now.micros() + jittered as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProcessorSettings {
        ProcessorSettings {
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            ..ProcessorSettings::default()
        }
    }

    fn delay_after(attempt: u32) -> i64 {
        match retry_plan(&settings(), attempt, Timestamp(0)) {
            RetryPlan::RetryAt(at) => at.micros(),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        for _ in 0..100 {
            assert!((500_000..=1_000_000).contains(&delay_after(1)));
            assert!((1_000_000..=2_000_000).contains(&delay_after(2)));
            assert!((4_000_000..=8_000_000).contains(&delay_after(4)));
        }
        let capped = retry_plan(
            &ProcessorSettings {
                max_attempts: 100,
                ..settings()
            },
            40,
            Timestamp(0),
        );
        assert!(matches!(capped, RetryPlan::RetryAt(at) if at.micros() <= 10_000_000));
    }

    #[test]
    fn last_attempt_goes_dead() {
        assert_eq!(retry_plan(&settings(), 5, Timestamp(0)), RetryPlan::Dead);
        assert!(matches!(
            retry_plan(&settings(), 4, Timestamp(0)),
            RetryPlan::RetryAt(_)
        ));
    }
}
