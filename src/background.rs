//! Background work yields the CPU to the ack path. SQLite's writer and checkpointer and the
//! processor's parsing run at the lowest scheduling priority: while ingest saturates the
//! machine they get what it leaves, and they catch up once the burst ends.

/// Lowers the calling thread to the lowest priority (nice 19). Best effort: a failure only
/// means background work competes with ingest as equals.
pub fn yield_to_ingest() {
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), 19) {
        tracing::debug!(%error, "could not lower a background thread's priority");
    }
}
