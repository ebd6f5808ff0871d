//! Live change notifications. One pump task per process follows the change feed
//! ([`crate::journal::feed`]) from the database and broadcasts each committed change once;
//! every subscriber ([`Bus::follow`]) subscribes to that broadcast *before* reading what it
//! missed from the database, then tails the broadcast skipping what it already sent, so it
//! sees every change once, in order. The broadcast is a bounded ring that never blocks its
//! sender: a subscriber that falls behind is told (`lagged`) and catches up from the database,
//! so a stalled client never slows ingest or other clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::clock::Timestamp;
use crate::journal::feed::{Change, ChangeFeed};
use crate::journal::JournalError;

/// Changes read from the database at once (by the pump and by catching-up subscribers).
const PAGE: usize = 512;
/// The pump looks at the feed at least this often, even without a signal (another instance
/// that died before notifying, rows committed while the `LISTEN` connection was down).
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How often the pump asks the backend to prune the feed.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum StreamItem {
    Change(Arc<Change>),
    /// The subscriber fell behind the live broadcast; what follows was read from the database
    /// from `resume_from` on, so nothing is lost.
    Lagged {
        resume_from: u64,
    },
    /// The subscriber asked to resume from before the oldest change still kept: the changes
    /// before `oldest` were pruned and cannot be sent.
    Truncated {
        oldest: u64,
    },
}

/// Which changes a subscriber wants: empty lists want everything. A kind matches itself and
/// its more precise kinds (`delivery` matches `delivery.processed`).
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    pub sources: Vec<String>,
    pub kinds: Vec<String>,
}

impl ChangeFilter {
    pub fn matches(&self, change: &Change) -> bool {
        let source_ok = self.sources.is_empty() || self.sources.contains(&change.source);
        let kind_ok = self.kinds.is_empty()
            || self.kinds.iter().any(|kind| {
                change.kind == *kind
                    || change
                        .kind
                        .strip_prefix(kind.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            });
        source_ok && kind_ok
    }
}

/// The process's live feed.
pub struct Bus {
    feed: Arc<dyn ChangeFeed>,
    ring: broadcast::Sender<Arc<Change>>,
    /// The last change broadcast.
    head: AtomicU64,
    stop: CancellationToken,
}

impl Bus {
    /// Starts the pump; it runs until [`Bus::stop`]. The broadcast ring holds `ring` changes
    /// for subscribers that are momentarily behind.
    pub fn start(feed: Arc<dyn ChangeFeed>, ring: usize) -> Arc<Self> {
        let (ring, _) = broadcast::channel(ring.max(1));
        let bus = Arc::new(Self {
            feed,
            ring,
            head: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        tokio::spawn(pump(bus.clone()));
        bus
    }

    /// Ends the pump and every subscription (graceful shutdown: streams must end for the
    /// connections carrying them to close).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// The last change broadcast (0 before the first).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    pub fn feed(&self) -> &Arc<dyn ChangeFeed> {
        &self.feed
    }

    /// Follows the feed from after `since` (or from now), through `filter`, into a channel of
    /// `capacity` items: the subscriber's whole buffer. Ends when the receiver is dropped or
    /// the bus stops.
    pub fn follow(
        self: &Arc<Self>,
        since: Option<u64>,
        filter: ChangeFilter,
        capacity: usize,
    ) -> mpsc::Receiver<StreamItem> {
        let (out, receiver) = mpsc::channel(capacity.max(1));
        let ring = self.ring.subscribe();
        let start = since.unwrap_or_else(|| self.head());
        let bus = self.clone();
        tokio::spawn(async move {
            let stop = bus.stop.clone();
            tokio::select! {
                () = stop.cancelled() => {}
                () = out.closed() => {}
                result = bus.serve(ring, start, since.is_some(), filter, &out) => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "a change-feed subscription failed");
                    }
                }
            }
        });
        receiver
    }

    async fn serve(
        &self,
        mut ring: broadcast::Receiver<Arc<Change>>,
        mut last: u64,
        resuming: bool,
        filter: ChangeFilter,
        out: &mpsc::Sender<StreamItem>,
    ) -> Result<(), Gone> {
        if resuming {
            let bounds = self.feed.bounds().await?;
            let oldest = bounds.oldest.unwrap_or(bounds.head + 1);
            if last + 1 < oldest {
                out.send(StreamItem::Truncated { oldest }).await?;
            }
        }
        loop {
            last = self.catch_up(last, &filter, out).await?;
            loop {
                match ring.recv().await {
                    Ok(change) if change.seq <= last => {}
                    // A number missed between the database and the ring: read it from there.
                    Ok(change) if change.seq > last + 1 => break,
                    Ok(change) => {
                        last = change.seq;
                        if filter.matches(&change) {
                            out.send(StreamItem::Change(change)).await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        out.send(StreamItem::Lagged { resume_from: last }).await?;
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
    }

    /// Sends what the database holds after `last`; returns the last number read.
    async fn catch_up(
        &self,
        mut last: u64,
        filter: &ChangeFilter,
        out: &mpsc::Sender<StreamItem>,
    ) -> Result<u64, Gone> {
        loop {
            let page = self.feed.changes_after(last, PAGE).await?;
            let full = page.len() == PAGE;
            for change in page {
                last = change.seq;
                if filter.matches(&change) {
                    out.send(StreamItem::Change(Arc::new(change))).await?;
                }
            }
            if !full {
                return Ok(last);
            }
        }
    }
}

/// Why a subscription ended early.
#[derive(Debug, thiserror::Error)]
enum Gone {
    #[error(transparent)]
    Storage(#[from] JournalError),
    #[error("the subscriber went away")]
    Subscriber,
}

impl<T> From<mpsc::error::SendError<T>> for Gone {
    fn from(_: mpsc::error::SendError<T>) -> Self {
        Self::Subscriber
    }
}

/// Reads committed changes after the last one broadcast and broadcasts them, whenever the
/// backend signals a write (or another instance notified), and at least every second.
async fn pump(bus: Arc<Bus>) {
    let written = bus.feed.written();
    let mut last = loop {
        match bus.feed.bounds().await {
            Ok(bounds) => break bounds.head,
            Err(error) => {
                tracing::warn!(%error, "reading the change feed's head failed; retrying");
                tokio::select! {
                    () = bus.stop.cancelled() => return,
                    () = tokio::time::sleep(POLL_EVERY) => {}
                }
            }
        }
    };
    bus.head.store(last, Ordering::Release);
    let mut last_prune = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = bus.stop.cancelled() => return,
            () = written.notified() => {}
            () = tokio::time::sleep(POLL_EVERY) => {}
        }
        if let Err(error) = bus.feed.sequence().await {
            tracing::warn!(%error, "numbering the change feed failed; retrying");
        }
        match broadcast_new(&bus, last).await {
            Ok(through) => last = through,
            Err(error) => tracing::warn!(%error, "reading the change feed failed; retrying"),
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = tokio::time::Instant::now();
            let now = Timestamp(chrono::Utc::now().timestamp_micros());
            if let Err(error) = bus.feed.prune(now).await {
                tracing::debug!(%error, "pruning the change feed deferred");
            }
        }
    }
}

async fn broadcast_new(bus: &Bus, mut last: u64) -> Result<u64, JournalError> {
    loop {
        let page = bus.feed.changes_after(last, PAGE).await?;
        let full = page.len() == PAGE;
        for change in page {
            last = change.seq;
            // No receivers is fine: nobody is watching.
            let _ = bus.ring.send(Arc::new(change));
            bus.head.store(last, Ordering::Release);
        }
        if !full {
            return Ok(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: &str, source: &str) -> Change {
        Change {
            seq: 1,
            at: Timestamp(0),
            kind: kind.into(),
            source: source.into(),
            delivery_id: None,
            event_type: None,
            table: None,
            key: None,
            data: crate::journal::feed::FeedJson::null(),
        }
    }

    #[test]
    fn a_kind_matches_itself_and_its_more_precise_kinds_only() {
        let filter = ChangeFilter {
            sources: vec![],
            kinds: vec!["delivery".into()],
        };
        assert!(filter.matches(&change("delivery.processed", "cartpanda")));
        assert!(filter.matches(&change("delivery", "cartpanda")));
        assert!(!filter.matches(&change("deliveryx.processed", "cartpanda")));
        assert!(!filter.matches(&change("ledger.created", "cartpanda")));
    }

    #[test]
    fn sources_narrow_and_an_empty_filter_takes_everything() {
        let filter = ChangeFilter {
            sources: vec!["stripe".into()],
            kinds: vec![],
        };
        assert!(filter.matches(&change("ledger.created", "stripe")));
        assert!(!filter.matches(&change("ledger.created", "cartpanda")));
        assert!(ChangeFilter::default().matches(&change("anything", "any")));
    }
}
