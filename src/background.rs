//! Background work yields the CPU to the ack path. SQLite's writer and the processor's
//! parsing run under Linux's `SCHED_IDLE` policy:
//! while ingest keeps the machine busy they get only the time it leaves, and they catch up
//! once the burst ends.
//!
//! `SCHED_IDLE` rather than nice 19: a nice-19 thread still takes a weighted share of a busy
//! core (the profile showed SQLite's writer at 42% of the server's CPU at full load), while an
//! idle-policy thread runs only when no other thread wants the core and is preempted as soon
//! as one does. An unprivileged thread cannot leave `SCHED_IDLE` (nor undo nice 19), so only
//! threads that do nothing else are lowered: short background jobs go to [`run`]'s own thread
//! instead of lowering a thread of tokio's blocking pool, which also serves requests.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::LazyLock;
use std::time::Duration;

use thread_priority::unix::{
    set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
    ThreadSchedulePolicy,
};
use thread_priority::{ThreadPriority, ThreadPriorityOsValue};
use tokio::sync::oneshot;

/// Lowers the calling thread for good. Best effort: a failure only means background work
/// competes with ingest as equals.
pub fn yield_to_ingest() {
    let result = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    if let Err(error) = result {
        tracing::debug!(?error, "could not lower a background thread's priority");
    }
}

/// The priority of a background thread that must not fall too far behind: it yields to
/// ingest while its backlog is small, and competes as an equal while clearing what it has would
/// take too long at the time ingest leaves it (a long burst must still be applied within
/// seconds of its end, and the log that holds the backlog is bounded).
pub struct OwnPriority {
    raised: bool,
    /// False once raising failed: leaving `SCHED_IDLE` needs `CAP_SYS_NICE` or an
    /// `RLIMIT_NICE` of 20, which an unprivileged process may lack.
    can_raise: bool,
}

impl OwnPriority {
    /// Lowers the calling thread; [`Self::raise`] and [`Self::lower`] move it afterwards.
    pub fn lowered() -> Self {
        yield_to_ingest();
        Self {
            raised: false,
            can_raise: true,
        }
    }

    pub fn is_raised(&self) -> bool {
        self.raised
    }

    /// Back to the normal policy (nice 0), if the process may.
    pub fn raise(&mut self) {
        if self.raised || !self.can_raise {
            return;
        }
        let result = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Os(ThreadPriorityOsValue::default()),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
        );
        match result {
            Ok(()) => self.raised = true,
            Err(error) => {
                self.can_raise = false;
                tracing::warn!(
                    ?error,
                    "background work cannot raise its priority (needs CAP_SYS_NICE or \
                     RLIMIT_NICE 20): it uses only the CPU ingest leaves, so a long burst is \
                     applied after it ends"
                );
            }
        }
    }

    pub fn lower(&mut self) {
        if self.raised {
            yield_to_ingest();
            self.raised = false;
        }
    }
}

/// CPU time the calling thread has used: how fast background work goes when it runs,
/// whatever its priority left it meanwhile.
///
/// Through libc (the `cpu-time` crate), not rustix's vDSO wrappers: their first use probes
/// the auxiliary vector in a way that makes valgrind abort, and the callgrind script
/// (`bench/scripts/callgrind-per-delivery.sh`) runs this binary.
pub fn thread_cpu_time() -> Duration {
    cpu_time::ThreadTime::now().as_duration()
}

/// Why background work gave no answer.
#[derive(Debug, thiserror::Error)]
#[error("background work panicked or its thread could not start")]
pub struct BackgroundFailed;

type Job = Box<dyn FnOnce() + Send>;

/// The one lowered thread that runs [`run`]'s jobs, one at a time, in order.
static JOBS: LazyLock<Option<mpsc::Sender<Job>>> = LazyLock::new(|| {
    let (sender, receiver) = mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new()
        .name("wharf-background".into())
        .spawn(move || {
            yield_to_ingest();
            for job in receiver {
                // A panicking job loses only its own answer, never the thread.
                let _ = catch_unwind(AssertUnwindSafe(job));
            }
        });
    match spawned {
        Ok(_) => Some(sender),
        Err(error) => {
            tracing::error!(%error, "could not start the background thread");
            None
        }
    }
});

/// Runs CPU or blocking work on the lowered background thread and awaits its answer.
pub async fn run<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BackgroundFailed> {
    let (answer, answered) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = answer.send(work());
    });
    let queued = JOBS.as_ref().and_then(|jobs| jobs.send(job).ok());
    queued.ok_or(BackgroundFailed)?;
    answered.await.map_err(|_| BackgroundFailed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use thread_priority::unix::thread_schedule_policy;

    const IDLE: ThreadSchedulePolicy =
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);

    fn policy() -> ThreadSchedulePolicy {
        thread_schedule_policy().expect("read the policy")
    }

    #[tokio::test]
    async fn jobs_run_lowered_and_the_caller_is_left_alone() {
        let before = policy();
        assert_eq!(run(policy).await.expect("answer"), IDLE);
        assert_eq!(policy(), before);
        assert_ne!(before, IDLE);
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_next_one_runs() {
        let failed = run(|| -> u8 { panic!("job panics on purpose") }).await;
        assert!(failed.is_err());
        assert_eq!(run(|| 7).await.expect("answer"), 7);
    }

    #[test]
    fn own_priority_moves_between_idle_and_normal() {
        std::thread::spawn(|| {
            let mut priority = OwnPriority::lowered();
            assert_eq!(policy(), IDLE);
            priority.raise();
            // Raising needs a privilege the test process may lack; lowering always works.
            if priority.is_raised() {
                assert_eq!(
                    policy(),
                    ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other)
                );
            }
            priority.lower();
            assert_eq!(policy(), IDLE);
            assert!(!priority.is_raised());
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn a_background_thread_stays_lowered() {
        std::thread::spawn(|| {
            yield_to_ingest();
            assert_eq!(policy(), IDLE);
        })
        .join()
        .expect("thread");
    }
}
