//! The disk part of an output's buffer (`buffer_dir`): batches that no
//! longer fit in memory while the server is down, and the batches left at
//! shutdown, kept as files until they are delivered, also across restarts.
//!
//! In memory an outage can be held for `max_buffer_points` (about a minute
//! at 3 000 processes polled every second); an hour of the same node is
//! tens of millions of points. On disk the bound is `max_buffer_disk_bytes`,
//! and the oldest files go first when it is reached, counted as dropped
//! like the memory's evictions.
//!
//! One file per batch, `<sequence>.batch`: a header line
//! `alumet-batch 1 <format> <points>` and the encoded body, written to a
//! temporary name and renamed, so that a crash leaves either the whole
//! file or none. The sequence orders them (the oldest is delivered first);
//! a batch put back at the front (the one in flight at shutdown) gets a
//! sequence below the others. `<format>` is the output's encoding: a file
//! of another format (the output's protocol changed) is not sent to a
//! server that would refuse it, and is counted as lost.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One batch as it is kept: its encoded body and its number of points.
/// (The queue's `Batch` is not used here: the queue uses this module.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    /// The encoded points.
    pub body: Vec<u8>,
    /// How many.
    pub points: usize,
}

/// First word of every batch file.
const MAGIC: &str = "alumet-batch 1";
/// Sequences start here, so that batches put back at the front (below the
/// first) never need a negative number.
const FIRST_SEQUENCE: u64 = 1 << 62;
/// Extension of batch files; temporary files end in `.tmp`.
const EXTENSION: &str = "batch";

#[derive(Debug, Clone, Copy)]
struct Entry {
    sequence: u64,
    bytes: u64,
    points: usize,
}

/// What [`DiskBuffer::open`] found in the directory.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Points of the batches left by a previous run, queued for delivery.
    pub points: usize,
    /// Points of files that cannot be sent (another format, unreadable).
    pub unusable_points: usize,
    /// Files that could not even be read; removed.
    pub unreadable_files: usize,
}

/// Batches on disk, oldest first, bounded in bytes.
#[derive(Debug)]
pub struct DiskBuffer {
    dir: PathBuf,
    format: String,
    max_bytes: u64,
    entries: VecDeque<Entry>,
    bytes: u64,
    points: usize,
    next_back: u64,
    next_front: u64,
}

impl DiskBuffer {
    /// The buffer in `dir` (created if needed) for batches of `format`,
    /// holding at most `max_bytes`; batches a previous run left are queued
    /// first.
    pub fn open(dir: &Path, format: &str, max_bytes: u64) -> io::Result<(Self, Recovered)> {
        fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        let mut recovered = Recovered::default();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                // A write cut short by a crash: never renamed, never counted.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(sequence) = name
                .strip_suffix(".batch")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            match read_header(&path) {
                Ok((file_format, points, bytes)) if file_format == format => {
                    found.push(Entry {
                        sequence,
                        bytes,
                        points,
                    });
                }
                Ok((_, points, _)) => {
                    recovered.unusable_points += points;
                    let _ = fs::remove_file(&path);
                }
                Err(_) => {
                    recovered.unreadable_files += 1;
                    let _ = fs::remove_file(&path);
                }
            }
        }
        found.sort_by_key(|e| e.sequence);
        let mut buffer = Self {
            dir: dir.to_owned(),
            format: format.to_owned(),
            max_bytes,
            next_back: found.last().map_or(FIRST_SEQUENCE, |e| e.sequence + 1),
            next_front: found.first().map_or(FIRST_SEQUENCE, |e| e.sequence) - 1,
            bytes: found.iter().map(|e| e.bytes).sum(),
            points: found.iter().map(|e| e.points).sum(),
            entries: found.into(),
        };
        // A smaller bound than the previous run's: its oldest go.
        recovered.unusable_points += buffer.evict_beyond_bound();
        recovered.points = buffer.points;
        Ok((buffer, recovered))
    }

    /// Points on disk.
    pub fn points(&self) -> usize {
        self.points
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether no batch is on disk.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn path_of(&self, sequence: u64) -> PathBuf {
        self.dir.join(format!("{sequence:020}.{EXTENSION}"))
    }

    /// Adds `batch` after the others (`front`: before them). Returns the
    /// points lost: the oldest files removed to stay within the bound, or
    /// the batch itself if it cannot be written (a full disk: said by the
    /// error, which the caller logs).
    pub fn push(&mut self, body: &[u8], points: usize, front: bool) -> (usize, Option<io::Error>) {
        let sequence = if front {
            let s = self.next_front;
            self.next_front -= 1;
            s
        } else {
            let s = self.next_back;
            self.next_back += 1;
            s
        };
        let path = self.path_of(sequence);
        match write_batch(&path, &self.format, body, points) {
            Ok(bytes) => {
                let entry = Entry {
                    sequence,
                    bytes,
                    points,
                };
                if front {
                    self.entries.push_front(entry);
                } else {
                    self.entries.push_back(entry);
                }
                self.bytes += bytes;
                self.points += points;
                (self.evict_beyond_bound(), None)
            }
            Err(e) => (points, Some(e)),
        }
    }

    /// Removes the oldest files until the rest fit `max_bytes`; returns
    /// their points.
    fn evict_beyond_bound(&mut self) -> usize {
        let mut lost = 0;
        while self.bytes > self.max_bytes {
            let Some(oldest) = self.entries.pop_front() else {
                break;
            };
            let _ = fs::remove_file(self.path_of(oldest.sequence));
            self.bytes -= oldest.bytes;
            self.points -= oldest.points;
            lost += oldest.points;
        }
        lost
    }

    /// Takes the oldest batch off the disk. `Err((points, why))`: its file
    /// could not be read back (removed; those points are lost).
    pub fn pop(&mut self) -> Option<Result<StoredBatch, (usize, String)>> {
        let entry = self.entries.pop_front()?;
        self.bytes -= entry.bytes;
        self.points -= entry.points;
        let path = self.path_of(entry.sequence);
        let read = read_body(&path, entry.points);
        let _ = fs::remove_file(&path);
        Some(read.map_err(|e| (entry.points, format!("{}: {e}", path.display()))))
    }
}

/// Writes `batch` to `path` through a temporary file; returns its size.
fn write_batch(path: &Path, format: &str, body: &[u8], points: usize) -> io::Result<u64> {
    let tmp = path.with_extension("tmp");
    let header = format!("{MAGIC} {format} {points}\n");
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(header.as_bytes())?;
        file.write_all(body)?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| (header.len() + body.len()) as u64)
}

/// The format, points and size of a batch file, from its header.
fn read_header(path: &Path) -> io::Result<(String, usize, u64)> {
    use std::io::{BufRead, BufReader, Read};
    let file = fs::File::open(path)?;
    let bytes = file.metadata()?.len();
    let mut line = String::new();
    // The header is one short line; a longer one is not ours.
    BufReader::new(file.take(256)).read_line(&mut line)?;
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "not a batch file");
    let rest = line
        .strip_prefix(MAGIC)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(invalid)?;
    let mut words = rest.split_whitespace();
    let format = words.next().ok_or_else(invalid)?.to_owned();
    let points = words
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(invalid)?;
    Ok((format, points, bytes))
}

/// The body of a batch file written for `points` points.
fn read_body(path: &Path, points: usize) -> io::Result<StoredBatch> {
    let data = fs::read(path)?;
    let start = data
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no header"))?;
    Ok(StoredBatch {
        body: data[start + 1..].to_vec(),
        points,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn batch(points: usize, tag: u8) -> StoredBatch {
        StoredBatch {
            body: vec![tag; points * 10],
            points,
        }
    }

    fn push(d: &mut DiskBuffer, b: &StoredBatch, front: bool) -> (usize, Option<io::Error>) {
        d.push(&b.body, b.points, front)
    }

    fn pop(d: &mut DiskBuffer) -> StoredBatch {
        d.pop().unwrap().unwrap()
    }

    #[test]
    fn batches_come_back_oldest_first_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, found) = DiskBuffer::open(dir.path(), "lp", 1 << 20).unwrap();
        assert_eq!(found, Recovered::default());
        push(&mut d, &batch(1, b'a'), false);
        push(&mut d, &batch(2, b'b'), false);
        // The batch that was in flight goes before the others.
        push(&mut d, &batch(3, b'z'), true);
        assert_eq!(d.points(), 6);
        drop(d);
        let (mut d, found) = DiskBuffer::open(dir.path(), "lp", 1 << 20).unwrap();
        assert_eq!(found.points, 6);
        assert_eq!(pop(&mut d).body[0], b'z');
        push(&mut d, &batch(1, b'c'), false);
        assert_eq!(pop(&mut d).body, vec![b'a'; 10]);
        assert_eq!(pop(&mut d).points, 2);
        assert_eq!(pop(&mut d).body[0], b'c');
        assert!(d.pop().is_none());
        assert_eq!((d.points(), d.bytes()), (0, 0));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_oldest_files_go_first_beyond_the_bound_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        // Room for about two of these (10 bytes a point plus a header).
        let (mut d, _) = DiskBuffer::open(dir.path(), "lp", 250).unwrap();
        assert_eq!(push(&mut d, &batch(10, b'a'), false).0, 0);
        assert_eq!(push(&mut d, &batch(10, b'b'), false).0, 0);
        assert_eq!(push(&mut d, &batch(10, b'c'), false).0, 10);
        assert_eq!(d.points(), 20);
        assert!(d.bytes() <= 250);
        assert_eq!(pop(&mut d).body[0], b'b');
    }

    #[test]
    fn other_formats_torn_and_foreign_files_are_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _) = DiskBuffer::open(dir.path(), "protobuf", 1 << 20).unwrap();
        push(&mut d, &batch(4, b'p'), false);
        drop(d);
        fs::write(dir.path().join("00000000000000000007.batch"), "garbage").unwrap();
        fs::write(dir.path().join("00000000000000000008.tmp"), "torn").unwrap();
        fs::write(dir.path().join("notes.txt"), "not ours").unwrap();
        let (d, found) = DiskBuffer::open(dir.path(), "json", 1 << 20).unwrap();
        assert_eq!(
            found,
            Recovered {
                points: 0,
                unusable_points: 4,
                unreadable_files: 1
            }
        );
        assert!(d.is_empty());
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec!["notes.txt"]);
    }

    #[test]
    fn a_batch_that_cannot_be_written_is_returned_as_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _) = DiskBuffer::open(&dir.path().join("sub"), "lp", 1 << 20).unwrap();
        fs::remove_dir(dir.path().join("sub")).unwrap();
        let (lost, error) = push(&mut d, &batch(3, b'a'), false);
        assert_eq!(lost, 3);
        assert!(error.is_some());
        assert_eq!(d.points(), 0);
    }
}
