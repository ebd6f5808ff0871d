//! What Wharf's SQLite journal occupies on disk: every file under the
//! bench's database directory (the database, its `-wal` and `-shm`, and
//! whatever else the journal keeps beside them, such as a log directory),
//! not only the file named in `WHARF_DATABASE`; and how long that disk takes
//! to make a small write durable, the floor under every durable ack.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;

use crate::report::Percentiles;

/// Files listed by name in the report, largest first.
const LARGEST_SHOWN: usize = 5;

/// Sizes of the files under one directory, subdirectories included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Sum of the files' lengths.
    pub total_bytes: u64,
    /// Sum of the blocks the filesystem allocated to them (less for sparse
    /// files, more for preallocated ones).
    pub allocated_bytes: u64,
    pub file_count: u64,
    /// The largest files, path relative to the directory, largest first.
    pub largest: Vec<(String, u64)>,
}

/// Walks `dir` without following symbolic links.
pub(crate) fn usage(dir: &Path) -> anyhow::Result<DiskUsage> {
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort_by(|(a_name, a_len, _), (b_name, b_len, _)| {
        b_len.cmp(a_len).then_with(|| a_name.cmp(b_name))
    });
    Ok(DiskUsage {
        total_bytes: files.iter().map(|(_, len, _)| len).sum(),
        allocated_bytes: files.iter().map(|(_, _, allocated)| allocated).sum(),
        file_count: files.len() as u64,
        largest: files
            .into_iter()
            .take(LARGEST_SHOWN)
            .map(|(name, len, _)| (name, len))
            .collect(),
    })
}

/// Size of the probe file: written once in full, so later writes into it
/// change no file metadata (as in the journal's preallocated segments).
const SYNC_PROBE_BYTES: u64 = 4 << 20;
/// One probe write: a group commit of a few deliveries.
const SYNC_PROBE_WRITE: usize = 4096;

/// Latency of `pwrite` of 4 KB + `fdatasync` into a preallocated file in
/// `dir`, `samples` times: what one durable group commit costs on this disk
/// right now, whatever Wharf does. A closed loop of N connections can never
/// be acked faster than N per such sync, so this bounds the durable ratio.
pub(crate) fn sync_latency(dir: &Path, samples: usize) -> anyhow::Result<Percentiles> {
    let path = dir.join("fdatasync-probe.bin");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let zeroes = vec![0u8; 1 << 20];
    for at in (0..SYNC_PROBE_BYTES).step_by(zeroes.len()) {
        file.write_all_at(&zeroes, at)?;
    }
    file.sync_all()?;
    let record = vec![b'x'; SYNC_PROBE_WRITE];
    let mut micros = Vec::with_capacity(samples);
    for n in 0..samples as u64 {
        let at = (n * SYNC_PROBE_WRITE as u64) % SYNC_PROBE_BYTES;
        let started = Instant::now();
        file.write_all_at(&record, at)?;
        file.sync_data()?;
        micros.push(started.elapsed().as_micros() as u64);
    }
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    micros.sort_unstable();
    Percentiles::from_sorted_micros(&micros).context("no sync samples")
}

/// Appends `(relative path, length, allocated bytes)` of every file under `dir`.
fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, u64, u64)>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            // Removed between listing and reading (a rotated segment): skip it.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        if metadata.is_dir() {
            walk(root, &path, files)?;
        } else if metadata.is_file() {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            files.push((name, metadata.len(), metadata.blocks() * 512));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_file_below_the_directory_largest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bench.db"), vec![0u8; 4096]).expect("db");
        std::fs::write(dir.path().join("bench.db-wal"), vec![0u8; 10_000]).expect("wal");
        std::fs::create_dir(dir.path().join("log")).expect("log dir");
        std::fs::write(dir.path().join("log").join("000001.seg"), b"abc").expect("segment");
        let usage = usage(dir.path()).expect("usage");
        assert_eq!(usage.total_bytes, 4096 + 10_000 + 3);
        assert_eq!(usage.file_count, 3);
        let names: Vec<&str> = usage.largest.iter().map(|(n, _)| n.as_str()).collect();
        let segment = Path::new("log").join("000001.seg").display().to_string();
        assert_eq!(names, vec!["bench.db-wal", "bench.db", segment.as_str()]);
        assert!(usage.allocated_bytes > 0);
        assert!(crate::disk::usage(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn the_sync_probe_measures_every_sample_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let latency = super::sync_latency(dir.path(), 20).expect("probe");
        assert_eq!(latency.count, 20);
        assert!(latency.p50_ms > 0.0 && latency.p50_ms <= latency.max_ms);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }
}
