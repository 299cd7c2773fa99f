//! An append-only journal of lines in front of a slower index: a line is durable (to a killed
//! process) once one `write(2)` has put it in the kernel, and a background indexer moves the
//! journaled items into their real store in batches, off the caller's path.
//!
//! The journal is a directory of segments (`<uuid v7>.ndjson`). Each process appends to its own
//! active segment and holds an exclusive lock on every segment it owns, so two processes on one
//! data directory never take each other's lines. [`Journal::take`] seals the active segment (a new
//! one takes its place) and hands over what was appended to it; the indexer commits the batch and
//! then [`Batch::done`] deletes the sealed segments. A process that dies leaves its segments behind,
//! unlocked: [`recover`] hands their lines to whoever opens the directory next, and deletes them
//! once they are indexed.
//!
//! Lines are JSON texts, which never hold a raw newline: `\n` frames them. A line is only ever
//! torn at a segment's end (a write cut short by power loss); recovery reports it as torn.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One segment file, locked by this process while it exists.
struct Segment {
    path: PathBuf,
    file: File,
    /// Bytes written, to cut a failed write's partial line.
    len: u64,
}

impl Segment {
    fn create(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(format!("{}.ndjson", uuid::Uuid::now_v7().simple()));
        let file = OpenOptions::new().append(true).create_new(true).open(&path)?;
        file.lock()?;
        Ok(Self { path, file, len: 0 })
    }

    fn delete(self) -> std::io::Result<()> {
        // Removed while still locked: nobody can take it for an orphan in between.
        std::fs::remove_file(&self.path)
    }
}

struct State<T> {
    active: Segment,
    /// Items whose lines are in the active segment (and, after a failed batch, in `sealed`).
    pending: Vec<T>,
    /// Segments whose items are in `pending` but no longer appended to.
    sealed: Vec<Segment>,
    line: Vec<u8>,
}

/// The journal of one process.
pub struct Journal<T> {
    dir: PathBuf,
    state: Mutex<State<T>>,
}

/// Items taken for indexing, with the segments that hold them.
pub struct Batch<T> {
    pub items: Vec<T>,
    segments: Vec<Segment>,
}

impl<T> Batch<T> {
    /// The items are indexed: their segments are deleted.
    pub fn done(self) -> std::io::Result<()> {
        let mut first_error = None;
        for segment in self.segments {
            if let Err(e) = segment.delete() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl<T> Journal<T> {
    /// Starts a new active segment in `dir` (created if needed). Call [`recover`] first to index
    /// what earlier processes left.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let active = Segment::create(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            state: Mutex::new(State { active, pending: Vec::new(), sealed: Vec::new(), line: Vec::new() }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `line` (no newline in it) and queues `item` for the indexer. Returns once the line
    /// is in the kernel (one `write(2)`, no sync), with the number of items now waiting. On error
    /// nothing is queued and the segment is cut back to its last whole line.
    pub fn append(&self, line: &[u8], item: T) -> std::io::Result<usize> {
        debug_assert!(!line.contains(&b'\n'));
        let mut state = self.state();
        let State { active, pending, line: buf, .. } = &mut *state;
        buf.clear();
        buf.extend_from_slice(line);
        buf.push(b'\n');
        if let Err(e) = active.file.write_all(buf) {
            // A partial line would run into the next one: cut it, or stop using the segment.
            if active.file.set_len(active.len).is_err() {
                let fresh = Segment::create(&self.dir)?;
                let torn = std::mem::replace(active, fresh);
                state.sealed.push(torn);
            }
            return Err(e);
        }
        active.len += buf.len() as u64;
        pending.push(item);
        Ok(pending.len())
    }

    /// Whether nothing waits for the indexer.
    pub fn is_idle(&self) -> bool {
        self.state().pending.is_empty()
    }

    /// Takes everything appended so far, sealing the active segment (a new one replaces it).
    /// `None` when nothing waits.
    pub fn take(&self) -> std::io::Result<Option<Batch<T>>> {
        if self.is_idle() {
            return Ok(None);
        }
        // Created outside the lock: appenders do not wait for a file to be made.
        let fresh = Segment::create(&self.dir)?;
        let mut state = self.state();
        if state.pending.is_empty() {
            drop(state);
            fresh.delete()?;
            return Ok(None);
        }
        let sealed = std::mem::replace(&mut state.active, fresh);
        let mut segments = std::mem::take(&mut state.sealed);
        segments.push(sealed);
        Ok(Some(Batch { items: std::mem::take(&mut state.pending), segments }))
    }

    /// Puts back a batch that could not be indexed, ahead of what was appended since.
    pub fn restore(&self, batch: Batch<T>) {
        let mut state = self.state();
        let newer = std::mem::replace(&mut state.pending, batch.items);
        state.pending.extend(newer);
        let newer = std::mem::replace(&mut state.sealed, batch.segments);
        state.sealed.extend(newer);
    }
}

impl<T> Drop for Journal<T> {
    fn drop(&mut self) {
        // An active segment with nothing pending holds only indexed lines (or none).
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if state.pending.is_empty() && state.sealed.is_empty() {
            let _ = std::fs::remove_file(&state.active.path);
        }
    }
}

/// A segment left by a process that is gone, with its lines.
pub struct Orphan {
    segment: Segment,
    /// Every whole line, in order.
    pub lines: Vec<Vec<u8>>,
    /// Bytes after the last newline: a line whose write was cut short, never acknowledged.
    pub torn: usize,
}

impl Orphan {
    pub fn path(&self) -> &Path {
        &self.segment.path
    }

    /// Its lines are indexed: the segment is deleted.
    pub fn done(self) -> std::io::Result<()> {
        self.segment.delete()
    }
}

/// The segments in `dir` that no live process holds, oldest first, each locked by the caller until
/// it is done with it. A missing directory has none.
pub fn recover(dir: &Path) -> std::io::Result<Vec<Orphan>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "ndjson") {
            paths.push(path);
        }
    }
    // uuid v7 names sort by creation time.
    paths.sort();
    let mut orphans = Vec::new();
    for path in paths {
        let mut file = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(f) => f,
            // Deleted by its owner since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match file.try_lock() {
            Ok(()) => {}
            // A live process's segment.
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => return Err(e),
        }
        // Its owner may have deleted it between our open and our lock.
        if !path.exists() {
            continue;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let lines = bytes[..whole].split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
        let len = bytes.len() as u64;
        orphans.push(Orphan { segment: Segment { path, file, len }, lines, torn: bytes.len() - whole });
    }
    Ok(orphans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_items_come_with_their_segments_and_done_deletes_them() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::<u32>::open(dir.path()).unwrap();
        assert!(journal.take().unwrap().is_none(), "nothing to take");
        journal.append(b"{\"a\":1}", 1).unwrap();
        assert_eq!(journal.append(b"{\"a\":2}", 2).unwrap(), 2);
        let batch = journal.take().unwrap().unwrap();
        assert_eq!(batch.items, [1, 2]);
        journal.append(b"{\"a\":3}", 3).unwrap();
        // Two segments now: the sealed one and the active one.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        batch.done().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let again = journal.take().unwrap().unwrap();
        assert_eq!(again.items, [3]);
        again.done().unwrap();
        drop(journal);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a drained journal leaves nothing");
    }

    #[test]
    fn a_restored_batch_goes_back_ahead_of_newer_items() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::<u32>::open(dir.path()).unwrap();
        journal.append(b"1", 1).unwrap();
        let batch = journal.take().unwrap().unwrap();
        journal.append(b"2", 2).unwrap();
        journal.restore(batch);
        let all = journal.take().unwrap().unwrap();
        assert_eq!(all.items, [1, 2]);
        all.done().unwrap();
        assert!(recover(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_live_journal_is_not_an_orphan_and_a_dead_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let live = Journal::<u32>::open(dir.path()).unwrap();
        live.append(b"{\"live\":true}", 1).unwrap();
        assert!(recover(dir.path()).unwrap().is_empty(), "a live process's segment is locked");

        // A process that died: its segment is on disk, unlocked, with a torn last line.
        std::fs::write(dir.path().join("00000000000000000000000000000000.ndjson"), b"{\"x\":1}\n{\"x\":2}\n{\"x\"")
            .unwrap();
        let orphans = recover(dir.path()).unwrap();
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].lines, [b"{\"x\":1}".to_vec(), b"{\"x\":2}".to_vec()]);
        assert_eq!(orphans[0].torn, 4);
        for orphan in orphans {
            orphan.done().unwrap();
        }
        assert!(recover(dir.path()).unwrap().is_empty());
        drop(live);
    }
}
