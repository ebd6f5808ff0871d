//! The delivery log in front of SQLite: a directory of fixed-size segment files holding
//! checksummed records ([`record`]) with consecutive sequence numbers. One writer appends
//! (and a sync thread `fdatasync`s before any ack); a reader follows the synced records into
//! SQLite; a segment whose records SQLite holds durably is reused, so the log's size is
//! bounded by the backlog it carries, never by time.
//!
//! Invariant: the log is the chain of segments whose headers name consecutive first sequence
//! numbers, each read up to its first invalid record. Anything after that (a torn tail, the
//! stale records of a reused segment) is never read back.

pub mod record;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use self::record::{DecodeError, LogRecord};

/// Bytes of a segment's header; records start after it.
const SEGMENT_HEADER: u64 = 64;
const MAGIC: &[u8; 8] = b"WHARFLOG";

/// The segments a reader may follow: first sequence number → file.
pub type SegmentMap = Arc<Mutex<BTreeMap<u64, PathBuf>>>;

/// A segment being written or waiting to be reused.
struct Segment {
    number: u64,
    path: PathBuf,
    file: Arc<File>,
    /// First sequence number stored in it (its header says so).
    first_seq: u64,
    /// Last sequence number stored in it; `first_seq - 1` while empty.
    last_seq: u64,
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// The last valid sequence number in the log (0 for an empty log).
    pub last_seq: u64,
    /// Bytes of valid records in the segment the writer continues.
    pub tail_offset: u64,
}

/// The writer's side: owns the segment files.
pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    max_segments: usize,
    active: Segment,
    offset: u64,
    sealed: Vec<Segment>,
    spare: Vec<Segment>,
    /// New segments made ahead of need by a background thread, so the writer never waits
    /// for a file to be zero-filled.
    prepared: Arc<Mutex<Vec<Segment>>>,
    preparing: Arc<AtomicUsize>,
    /// The preparing thread, joined on drop: a log reopened in the same process must not
    /// take as spare a file that thread is still zero-filling.
    preparer: Mutex<Option<std::thread::JoinHandle<()>>>,
    next_number: Arc<AtomicU64>,
    pending: Vec<u8>,
    /// Files written since the last `take_dirty`, to be synced before an ack.
    dirty: Vec<Arc<File>>,
    readable: SegmentMap,
}

impl SegmentLog {
    /// Opens (creating) the log in `dir` and recovers it: after this the writer continues
    /// right after the last valid record, and `readable` lists every segment of the chain.
    /// `floor_seq` is the lowest sequence number the log may continue from (what SQLite
    /// already holds), for a log whose segments were all reused.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        max_segments: usize,
        floor_seq: u64,
    ) -> io::Result<(Self, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let mut headers = Vec::new();
        let mut next_number = 1;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(number) = segment_number(&path) else {
                continue;
            };
            next_number = next_number.max(number + 1);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let first_seq = read_header(&file)?
                .filter(|&(n, _)| n == number)
                .map(|(_, f)| f);
            headers.push((first_seq, number, path, file));
        }
        headers.sort_by_key(|(first_seq, number, _, _)| (first_seq.unwrap_or(0), *number));

        // Follow the chain from the segment that holds `floor_seq + 1`: the one with the
        // greatest first sequence number not above it. An older segment (applied, released
        // and not yet reused) also starts below it; starting there would end the chain at
        // that segment's last record and leave the live segments as spares, losing what
        // SQLite did not hold yet.
        let start = headers
            .iter()
            .filter_map(|(first_seq, ..)| *first_seq)
            .filter(|&first| first <= floor_seq + 1)
            .max();
        let mut chain: Vec<Segment> = Vec::new();
        let mut spare = Vec::new();
        let mut expected: Option<u64> = None;
        let mut tail_offset = SEGMENT_HEADER;
        for (first_seq, number, path, file) in headers {
            let file = Arc::new(file);
            let continues = match (first_seq, expected) {
                (Some(first), None) => Some(first) == start,
                (Some(first), Some(next)) => first == next,
                (None, _) => false,
            };
            if !continues {
                spare.push(Segment {
                    number,
                    path,
                    file,
                    first_seq: 0,
                    last_seq: 0,
                });
                continue;
            }
            let first = first_seq.unwrap_or(1);
            let (last_seq, end) = scan(&file, first)?;
            if let Some(previous) = chain.last() {
                if previous.last_seq + 1 != first {
                    spare.push(Segment {
                        number,
                        path,
                        file,
                        first_seq: 0,
                        last_seq: 0,
                    });
                    continue;
                }
            }
            expected = Some(last_seq + 1);
            tail_offset = end;
            chain.push(Segment {
                number,
                path,
                file,
                first_seq: first,
                last_seq,
            });
        }
        let readable: SegmentMap = Arc::new(Mutex::new(
            chain
                .iter()
                .map(|segment| (segment.first_seq, segment.path.clone()))
                .collect(),
        ));
        let last_seq = chain
            .last()
            .map_or(floor_seq, |segment| segment.last_seq.max(floor_seq));
        let mut log = Self {
            dir: dir.to_owned(),
            segment_bytes: segment_bytes.max(SEGMENT_HEADER * 2),
            max_segments: max_segments.max(2),
            active: Segment {
                number: 0,
                path: PathBuf::new(),
                file: Arc::new(tempfile::tempfile()?),
                first_seq: 0,
                last_seq: 0,
            },
            offset: tail_offset,
            sealed: Vec::new(),
            spare,
            prepared: Arc::new(Mutex::new(Vec::new())),
            preparing: Arc::new(AtomicUsize::new(0)),
            preparer: Mutex::new(None),
            next_number: Arc::new(AtomicU64::new(next_number)),
            pending: Vec::new(),
            dirty: Vec::new(),
            readable,
        };
        match chain.pop() {
            Some(active) if active.last_seq >= floor_seq || active.first_seq == floor_seq + 1 => {
                log.active = active;
                log.sealed = chain;
            }
            other => {
                // Nothing to continue (a new log, or every segment already applied): start
                // a fresh segment at the next sequence number.
                log.sealed = chain;
                if let Some(segment) = other {
                    log.sealed.push(segment);
                }
                log.start_segment(last_seq + 1)?;
            }
        }
        log.prepare_ahead();
        let tail = log.offset;
        Ok((
            log,
            Recovered {
                last_seq,
                tail_offset: tail,
            },
        ))
    }

    /// The segments a reader may follow.
    pub fn readable(&self) -> SegmentMap {
        self.readable.clone()
    }

    /// Adds one encoded record (sequence number `seq`) to the batch being written; moves to
    /// a new segment when it does not fit. Fails when the log is at its size bound.
    pub fn push(&mut self, seq: u64, encoded: &[u8]) -> io::Result<()> {
        let room = self.segment_bytes - self.offset - self.pending.len() as u64;
        if encoded.len() as u64 > room {
            self.flush()?;
            if SEGMENT_HEADER + encoded.len() as u64 > self.segment_bytes {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a record is larger than a log segment",
                ));
            }
            self.seal_and_switch(seq)?;
        }
        self.pending.extend_from_slice(encoded);
        self.active.last_seq = seq;
        Ok(())
    }

    /// Writes what the batch pushed. The files it touched are then in [`Self::take_dirty`].
    pub fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.active.file.write_all_at(&self.pending, self.offset)?;
        self.offset += self.pending.len() as u64;
        self.pending.clear();
        self.mark_dirty(self.active.file.clone());
        Ok(())
    }

    /// The files written since the last call, oldest first: each must be synced before the
    /// records in it are acked.
    pub fn take_dirty(&mut self) -> Vec<Arc<File>> {
        std::mem::take(&mut self.dirty)
    }

    /// Makes sealed segments whose every record SQLite holds durably reusable.
    pub fn release_through(&mut self, applied_seq: u64) {
        let (done, kept): (Vec<Segment>, Vec<Segment>) = self
            .sealed
            .drain(..)
            .partition(|segment| segment.last_seq <= applied_seq);
        self.sealed = kept;
        if done.is_empty() {
            return;
        }
        let mut readable = self.readable.lock();
        for segment in done {
            readable.remove(&segment.first_seq);
            self.spare.push(segment);
        }
    }

    /// The active segment's path and inode, to notice a file deleted or replaced under us.
    pub fn active_identity(&self) -> (PathBuf, u64) {
        let inode = self
            .active
            .file
            .metadata()
            .map(|meta| meta.ino())
            .unwrap_or(0);
        (self.active.path.clone(), inode)
    }

    fn mark_dirty(&mut self, file: Arc<File>) {
        if !self.dirty.iter().any(|known| Arc::ptr_eq(known, &file)) {
            self.dirty.push(file);
        }
    }

    fn seal_and_switch(&mut self, first_seq: u64) -> io::Result<()> {
        let next = self.next_segment()?;
        let full = std::mem::replace(&mut self.active, next);
        self.sealed.push(full);
        self.begin_active(first_seq)
    }

    /// Makes a reused or new segment the active one, its header naming `first_seq`.
    fn start_segment(&mut self, first_seq: u64) -> io::Result<()> {
        self.active = self.next_segment()?;
        self.begin_active(first_seq)
    }

    /// A reused segment, or a new one while the log is under its bound.
    fn next_segment(&mut self) -> io::Result<Segment> {
        let reused = self.spare.pop().or_else(|| self.prepared.lock().pop());
        let segment = match reused {
            Some(segment) => segment,
            None if self.files() < self.max_segments => create_segment(
                &self.dir,
                self.segment_bytes,
                self.next_number.fetch_add(1, Ordering::AcqRel),
            )?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "the delivery log is at its size bound: SQLite is behind",
                ))
            }
        };
        self.prepare_ahead();
        Ok(segment)
    }

    /// Segment files that exist or are being made.
    fn files(&self) -> usize {
        1 + self.sealed.len()
            + self.spare.len()
            + self.prepared.lock().len()
            + self.preparing.load(Ordering::Acquire)
    }

    /// When no segment waits to be reused, a background thread makes the next one, so that
    /// the switch to it never stalls an ack behind a zero-fill.
    fn prepare_ahead(&self) {
        let waiting = self.spare.len() + self.prepared.lock().len();
        if waiting > 0 || self.preparing.load(Ordering::Acquire) > 0 {
            return;
        }
        if self.files() >= self.max_segments {
            return;
        }
        self.preparing.fetch_add(1, Ordering::AcqRel);
        let (dir, bytes) = (self.dir.clone(), self.segment_bytes);
        let number = self.next_number.fetch_add(1, Ordering::AcqRel);
        let (prepared, preparing) = (self.prepared.clone(), self.preparing.clone());
        let spawned = std::thread::Builder::new()
            .name("wharf-log-prepare".into())
            .spawn(move || {
                crate::background::yield_to_ingest();
                match create_segment(&dir, bytes, number) {
                    Ok(segment) => prepared.lock().push(segment),
                    Err(error) => {
                        tracing::warn!(%error, "could not prepare the next log segment")
                    }
                }
                preparing.fetch_sub(1, Ordering::AcqRel);
            });
        match spawned {
            Ok(handle) => {
                if let Some(finished) = self.preparer.lock().replace(handle) {
                    let _ = finished.join();
                }
            }
            Err(_) => {
                self.preparing.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    fn begin_active(&mut self, first_seq: u64) -> io::Result<()> {
        let mut segment = std::mem::replace(
            &mut self.active,
            Segment {
                number: 0,
                path: PathBuf::new(),
                file: Arc::new(tempfile::tempfile()?),
                first_seq: 0,
                last_seq: 0,
            },
        );
        segment.first_seq = first_seq;
        segment.last_seq = first_seq - 1;
        segment
            .file
            .write_all_at(&header(segment.number, first_seq), 0)?;
        self.mark_dirty(segment.file.clone());
        self.readable.lock().insert(first_seq, segment.path.clone());
        self.offset = SEGMENT_HEADER;
        self.active = segment;
        Ok(())
    }
}

/// A new segment file, its blocks allocated by writing zeroes, so that later writes into it
/// change no file metadata and an `fdatasync` flushes data alone.
fn create_segment(dir: &Path, segment_bytes: u64, number: u64) -> io::Result<Segment> {
    let path = dir.join(format!("{number:010}.seg"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let filled = fill_with_zeroes(&file, segment_bytes).and_then(|()| File::open(dir)?.sync_all());
    if let Err(error) = filled {
        // A half-made segment (disk full) would hold space and never be used.
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(error);
    }
    Ok(Segment {
        number,
        path,
        file: Arc::new(file),
        first_seq: 0,
        last_seq: 0,
    })
}

fn fill_with_zeroes(file: &File, bytes: u64) -> io::Result<()> {
    let zeroes = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < bytes {
        let n = (bytes - at).min(zeroes.len() as u64) as usize;
        file.write_all_at(&zeroes[..n], at)?;
        at += n as u64;
    }
    file.sync_all()
}

fn segment_number(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".seg")?.parse().ok()
}

fn header(number: u64, first_seq: u64) -> [u8; SEGMENT_HEADER as usize] {
    let mut bytes = [0u8; SEGMENT_HEADER as usize];
    bytes[0..8].copy_from_slice(MAGIC);
    bytes[8..16].copy_from_slice(&number.to_le_bytes());
    bytes[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// (segment number, first sequence number) if the header is intact.
fn read_header(file: &File) -> io::Result<Option<(u64, u64)>> {
    let mut bytes = [0u8; SEGMENT_HEADER as usize];
    if file.read_exact_at(&mut bytes, 0).is_err() {
        return Ok(None);
    }
    let crc = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    if &bytes[0..8] != MAGIC || crc32fast::hash(&bytes[0..24]) != crc {
        return Ok(None);
    }
    let number = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
    let first_seq = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or_default());
    Ok(Some((number, first_seq)))
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        if let Some(preparer) = self.preparer.lock().take() {
            let _ = preparer.join();
        }
    }
}

/// Reads the valid records of a segment from its start: the last sequence number and the
/// offset right after the last valid record.
fn scan(file: &File, first_seq: u64) -> io::Result<(u64, u64)> {
    let mut cursor = Cursor {
        file: Arc::new(file.try_clone()?),
        offset: SEGMENT_HEADER,
        next_seq: first_seq,
        first_seq,
    };
    while cursor.next()?.is_some() {}
    Ok((cursor.next_seq - 1, cursor.offset))
}

/// A position in one segment.
struct Cursor {
    file: Arc<File>,
    offset: u64,
    next_seq: u64,
    /// The first sequence number of this cursor's segment.
    first_seq: u64,
}

impl Cursor {
    /// The next valid record, or `None` at the end of the valid chain in this segment.
    fn next(&mut self) -> io::Result<Option<(u64, LogRecord)>> {
        let mut head = [0u8; record::HEADER_BYTES];
        if self.file.read_exact_at(&mut head, self.offset).is_err() {
            return Ok(None);
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len == 0 {
            return Ok(None);
        }
        let mut bytes = vec![0u8; record::HEADER_BYTES + len];
        if self.file.read_exact_at(&mut bytes, self.offset).is_err() {
            return Ok(None);
        }
        match record::decode(&bytes) {
            Ok((seq, record, total)) if seq == self.next_seq => {
                self.offset += total as u64;
                self.next_seq += 1;
                Ok(Some((seq, record)))
            }
            Ok(_) | Err(DecodeError::Truncated | DecodeError::Checksum) => Ok(None),
            Err(DecodeError::Malformed(_)) => Ok(None),
        }
    }
}

/// Follows the log's records in order, across segments, up to what has been synced.
pub struct LogReader {
    segments: SegmentMap,
    cursor: Option<Cursor>,
    next_seq: u64,
}

impl LogReader {
    /// A reader that starts at `next_seq`.
    pub fn new(segments: SegmentMap, next_seq: u64) -> Self {
        Self {
            segments,
            cursor: None,
            next_seq,
        }
    }

    /// Up to `max` records with sequence numbers up to `through`, in order.
    pub fn read(&mut self, through: u64, max: usize) -> io::Result<Vec<(u64, LogRecord)>> {
        let mut records = Vec::new();
        while self.next_seq <= through && records.len() < max {
            if self.cursor.is_none() && !self.open_segment()? {
                break;
            }
            let Some(cursor) = self.cursor.as_mut() else {
                break;
            };
            match cursor.next()? {
                Some((seq, record)) => {
                    self.next_seq = seq + 1;
                    records.push((seq, record));
                }
                // This segment ends here: the next record is in the next segment, unless
                // this is already the segment that starts there (registered before its first
                // record is readable): then there is nothing more yet.
                None => {
                    let moved = cursor.first_seq != self.next_seq
                        && self.segments.lock().contains_key(&self.next_seq);
                    if !moved {
                        break;
                    }
                    self.cursor = None;
                }
            }
        }
        Ok(records)
    }

    /// Positions the cursor on the segment holding `next_seq`; false if none does yet.
    fn open_segment(&mut self) -> io::Result<bool> {
        let found = self
            .segments
            .lock()
            .range(..=self.next_seq)
            .next_back()
            .map(|(first, path)| (*first, path.clone()));
        let Some((first_seq, path)) = found else {
            return Ok(false);
        };
        let mut cursor = Cursor {
            file: Arc::new(File::open(path)?),
            offset: SEGMENT_HEADER,
            next_seq: first_seq,
            first_seq,
        };
        while cursor.next_seq < self.next_seq {
            if cursor.next()?.is_none() {
                return Ok(false);
            }
        }
        self.cursor = Some(cursor);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::record::{encode, LogRecord};
    use super::*;
    use crate::clock::Timestamp;
    use crate::journal::{DeliveryStatus, NewDelivery};

    fn delivery(n: u64) -> LogRecord {
        LogRecord::Delivery(NewDelivery {
            source: "s".into(),
            event_id: None,
            event_type: "t".into(),
            dedup_key: format!("k{n}"),
            received_at: Timestamp(n as i64),
            headers_json: "{}".into(),
            body: bytes::Bytes::from(vec![b'x'; 300]),
            status: DeliveryStatus::Pending,
            last_error: None,
        })
    }

    fn append(log: &mut SegmentLog, range: std::ops::RangeInclusive<u64>) {
        for seq in range {
            let mut buf = Vec::new();
            encode(seq, &delivery(seq), &mut buf);
            log.push(seq, &buf).expect("push");
        }
        log.flush().expect("flush");
        for file in log.take_dirty() {
            file.sync_data().expect("sync");
        }
    }

    fn seqs(records: &[(u64, LogRecord)]) -> Vec<u64> {
        records.iter().map(|(seq, _)| *seq).collect()
    }

    #[test]
    fn records_survive_reopen_across_segments_and_a_reader_follows_them() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, recovered) = SegmentLog::open(dir.path(), 4096, 64, 0).expect("open");
        assert_eq!(recovered.last_seq, 0);
        append(&mut log, 1..=40);
        let mut reader = LogReader::new(log.readable(), 1);
        assert_eq!(
            seqs(&reader.read(25, 1000).expect("read")),
            (1..=25).collect::<Vec<_>>()
        );
        assert_eq!(
            seqs(&reader.read(40, 1000).expect("read")),
            (26..=40).collect::<Vec<_>>()
        );
        drop(log);

        let (mut log, recovered) = SegmentLog::open(dir.path(), 4096, 64, 0).expect("reopen");
        assert_eq!(recovered.last_seq, 40);
        append(&mut log, 41..=45);
        let mut reader = LogReader::new(log.readable(), 10);
        assert_eq!(
            seqs(&reader.read(u64::MAX, 1000).expect("read")),
            (10..=45).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_writing_continues_after_the_last_valid_record() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _) = SegmentLog::open(dir.path(), 1 << 20, 8, 0).expect("open");
        append(&mut log, 1..=5);
        let (path, _) = log.active_identity();
        let end = log.offset;
        drop(log);
        // Half of a sixth record: what a crash mid-write leaves.
        let mut buf = Vec::new();
        encode(6, &delivery(6), &mut buf);
        let file = OpenOptions::new().write(true).open(&path).expect("segment");
        file.write_all_at(&buf[..buf.len() / 2], end)
            .expect("torn write");

        let (mut log, recovered) = SegmentLog::open(dir.path(), 1 << 20, 8, 0).expect("reopen");
        assert_eq!(
            recovered.last_seq, 5,
            "the torn record is not part of the log"
        );
        assert_eq!(recovered.tail_offset, end);
        append(&mut log, 6..=7);
        let mut reader = LogReader::new(log.readable(), 1);
        assert_eq!(
            seqs(&reader.read(u64::MAX, 100).expect("read")),
            (1..=7).collect::<Vec<_>>()
        );
    }

    /// A released segment that was not reused yet still has an old header below SQLite's
    /// floor: recovery must start at the live segment holding the floor's successor, or the
    /// records SQLite does not hold would be cut off as spare segments.
    #[test]
    fn recovery_starts_at_the_live_segment_not_at_an_older_released_one() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _) = SegmentLog::open(dir.path(), 4096, 64, 0).expect("open");
        append(&mut log, 1..=60);
        log.release_through(36);
        append(&mut log, 61..=84);
        drop(log);
        let (_log, recovered) = SegmentLog::open(dir.path(), 4096, 64, 60).expect("reopen");
        assert_eq!(
            recovered.last_seq, 84,
            "nothing past SQLite's floor is lost"
        );
        let mut reader = LogReader::new(_log.readable(), 61);
        assert_eq!(
            seqs(&reader.read(u64::MAX, 1000).expect("read")),
            (61..=84).collect::<Vec<_>>()
        );
    }

    #[test]
    fn applied_segments_are_reused_and_the_log_stays_bounded() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _) = SegmentLog::open(dir.path(), 4096, 4, 0).expect("open");
        let mut seq = 0;
        for _ in 0..50 {
            append(&mut log, seq + 1..=seq + 20);
            seq += 20;
            log.release_through(seq);
        }
        let files = std::fs::read_dir(dir.path()).expect("dir").count();
        assert!(files <= 4, "{files} segment files for 1000 records");
        drop(log);
        let (_, recovered) = SegmentLog::open(dir.path(), 4096, 4, seq).expect("reopen");
        assert_eq!(
            recovered.last_seq, seq,
            "reused segments never resurrect old records"
        );
    }

    #[test]
    fn the_log_refuses_records_once_at_its_bound_until_segments_are_released() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _) = SegmentLog::open(dir.path(), 4096, 3, 0).expect("open");
        let mut refused = None;
        for seq in 1..=200 {
            let mut buf = Vec::new();
            encode(seq, &delivery(seq), &mut buf);
            if let Err(error) = log.push(seq, &buf) {
                refused = Some((seq, error.kind()));
                break;
            }
        }
        let (at, kind) = refused.expect("the bound is reached");
        assert_eq!(kind, io::ErrorKind::StorageFull);
        log.flush().expect("flush");
        log.release_through(at - 1);
        let mut buf = Vec::new();
        encode(at, &delivery(at), &mut buf);
        log.push(at, &buf).expect("room again once applied");
    }
}
