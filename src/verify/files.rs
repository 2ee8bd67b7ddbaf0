//! Verifying the file sink's files, read in parallel.
//!
//! Following a chain is sequential, but nearly all of its cost is not:
//! parsing each line into a record, writing the record back to see that
//! the line is the one the sink wrote, and hashing it. Each record's hash
//! follows the hash *stored* in the record before it, so a thread that
//! reads a run of lines can hash each one after the line before it on its
//! own. This thread cuts the file into chunks of whole lines; workers read
//! and hash them; this thread then follows the chains in file order,
//! using a worker's hash only where the head it followed is the head the
//! chain has here (any other record is hashed again here), so the result
//! is the same as reading the lines one by one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read as _;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};

use super::{Verification, Verifier};
use crate::chain::checkpoint::PurgeStatement;
use crate::chain::{self, Hashed};
use crate::sink::PURGES_EXTENSION;
use crate::{AuditRecord, Error, Result};

/// Bytes read per chunk (more when one line is longer).
const CHUNK: usize = if cfg!(test) { 1024 } else { 1 << 20 };

/// Workers at most: the reading and the following on this thread keep
/// up with about this many.
const MAX_WORKERS: usize = 4;

/// Verifies the file sink's files: one file, or every `*.jsonl` file of a
/// directory, in name (that is, date) order, each line a record.
///
/// # Errors
///
/// The path cannot be read (a missing file, a directory without access).
pub fn verify_files(path: impl AsRef<Path>) -> Result<Verification> {
    verify_files_with(Verifier::new(), path)
}

/// As [`verify_files`], with a verifier that holds the checkpoints' public
/// keys or copies of checkpoints ([`Verifier::keys`],
/// [`Verifier::witness`]).
///
/// # Errors
///
/// As for [`verify_files`].
pub fn verify_files_with(mut verifier: Verifier, path: impl AsRef<Path>) -> Result<Verification> {
    let files = files(path.as_ref())?;
    // What retention deleted, as it stated it, before the records.
    for statements in purge_files(path.as_ref())? {
        read_statements(&statements, &mut verifier)?;
    }
    for file in files {
        check_file(&file, &mut verifier)?;
    }
    Ok(verifier.finish())
}

/// The files to read: `path` itself, or a directory's `*.jsonl` files by
/// name.
fn files(path: &Path) -> Result<Vec<PathBuf>> {
    let cannot = |e| Error::io(format!("cannot read {}", path.display()), e);
    if !path.is_dir() {
        std::fs::metadata(path).map_err(cannot)?;
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(cannot)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    Ok(files)
}

/// The files of purge statements (`*.purges`) in `path`, a directory, or
/// beside it, a file.
fn purge_files(path: &Path) -> Result<Vec<PathBuf>> {
    let dir = if path.is_dir() {
        path
    } else {
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    };
    let cannot = |e| Error::io(format!("cannot read {}", dir.display()), e);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(cannot)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == PURGES_EXTENSION))
        .collect();
    files.sort();
    Ok(files)
}

/// Hands each purge statement of a `*.purges` file to the verifier; a
/// line that is not one is named unreadable.
fn read_statements(path: &Path, verifier: &mut Verifier) -> Result<()> {
    let cannot = |e| Error::io(format!("cannot read {}", path.display()), e);
    let text = std::fs::read(path).map_err(cannot)?;
    let body = text.strip_suffix(b"\n").unwrap_or(&text);
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if text.is_empty() {
            break;
        }
        match PurgeStatement::from_json_line(line) {
            Ok((statement, note)) => verifier.purge_statement(&statement, note.as_deref()),
            Err(error) => verifier.unreadable(format!("{}:{}", path.display(), i + 1), error),
        }
    }
    Ok(())
}

/// One line as a worker read it.
// Nearly every line is a record: boxing them would allocate for each.
#[allow(clippy::large_enum_variant)]
enum Line {
    Record {
        record: AuditRecord,
        /// The line is not what the sink writes for this record.
        reformatted: bool,
        /// Its hash, following the hash stored in the line before it.
        hashed: Option<Hashed>,
    },
    Unreadable(serde_json::Error),
}

/// A chunk's lines, and the chunk's buffer for the next read.
type Done = (u64, Vec<Line>, Vec<u8>);

/// A chunk to read, and the lines of one already followed: the worker
/// drops those records (freeing memory on the thread that allocated it,
/// mostly, which the allocator handles best) and fills the vector again.
type Job = (u64, Vec<u8>, Vec<Line>);

fn check_file(path: &Path, verifier: &mut Verifier) -> Result<()> {
    let cannot = |e| Error::io(format!("cannot read {}", path.display()), e);
    let mut file = File::open(path).map_err(cannot)?;
    let workers = std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_WORKERS);
    let (jobs, queued) = mpsc::sync_channel::<Job>(workers);
    let queued = Mutex::new(queued);
    std::thread::scope(|scope| {
        // Dropped when this closure returns, however: the workers then end.
        let jobs = jobs;
        let (finished, done) = mpsc::channel::<Done>();
        for _ in 0..workers {
            let (queued, finished) = (&queued, finished.clone());
            scope.spawn(move || {
                let mut buf = Vec::with_capacity(1024);
                loop {
                    // The lock is held while waiting: the others wait for it.
                    let job = queued.lock().ok().and_then(|rx| rx.recv().ok());
                    let Some((n, chunk, mut lines)) = job else {
                        return;
                    };
                    lines.clear();
                    read_lines(&chunk, &mut buf, &mut lines);
                    if finished.send((n, lines, chunk)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(finished);
        // Chunks read, and chunks followed, so far; at most two per worker
        // are in between, which bounds the memory.
        let (mut sent, mut followed) = (0_u64, 0_u64);
        let mut waiting: BTreeMap<u64, Vec<Line>> = BTreeMap::new();
        let mut spare: Vec<Vec<u8>> = Vec::new();
        let mut followed_lines: Vec<Vec<Line>> = Vec::new();
        let mut carry = Vec::new();
        let mut at_end = false;
        let mut number = 0_u64;
        loop {
            while !at_end && sent - followed < 2 * workers as u64 {
                let chunk = spare.pop().unwrap_or_default();
                match next_chunk(&mut file, &mut carry, chunk).map_err(cannot)? {
                    Some(chunk) => {
                        // The workers end only when `jobs` is dropped.
                        let lines = followed_lines.pop().unwrap_or_default();
                        let _ = jobs.send((sent, chunk, lines));
                        sent += 1;
                    }
                    None => at_end = true,
                }
            }
            if followed == sent {
                return Ok(());
            }
            let lines = loop {
                if let Some(lines) = waiting.remove(&followed) {
                    break lines;
                }
                // A worker that stopped (it cannot: nothing in it fails)
                // would leave its chunk unanswered: say so, do not hang.
                let (n, lines, chunk) = done.recv().map_err(|_| {
                    Error::io("a verify worker stopped", std::io::ErrorKind::Other.into())
                })?;
                spare.push(chunk);
                waiting.insert(n, lines);
            };
            followed += 1;
            for line in &lines {
                number += 1;
                match line {
                    Line::Record {
                        record,
                        reformatted,
                        hashed,
                    } => verifier.check_stored(record, *reformatted, *hashed),
                    Line::Unreadable(error) => {
                        verifier.unreadable(format!("{}:{number}", path.display()), error);
                    }
                }
            }
            followed_lines.push(lines);
        }
    })
}

/// The next chunk of whole lines (the file's last line may lack its
/// newline), in `chunk`'s buffer; what follows its last newline waits in
/// `carry`. `None` at the end of the file.
fn next_chunk(
    file: &mut File,
    carry: &mut Vec<u8>,
    mut chunk: Vec<u8>,
) -> std::io::Result<Option<Vec<u8>>> {
    chunk.clear();
    chunk.append(carry);
    loop {
        let from = chunk.len();
        let read = file.take(CHUNK as u64).read_to_end(&mut chunk)?;
        if read < CHUNK {
            // The end of the file: whatever is left is its last line.
            return Ok((!chunk.is_empty()).then_some(chunk));
        }
        if let Some(i) = chunk[from..].iter().rposition(|&b| b == b'\n') {
            carry.extend_from_slice(&chunk[from + i + 1..]);
            chunk.truncate(from + i + 1);
            return Ok(Some(chunk));
        }
        // One line longer than a chunk: read on.
    }
}

/// Reads a chunk's lines into records, each checked against its line and
/// hashed after the line before it when both are of one chain.
fn read_lines(chunk: &[u8], buf: &mut Vec<u8>, lines: &mut Vec<Line>) {
    let body = chunk.strip_suffix(b"\n").unwrap_or(chunk);
    // The chain and stored hash of the line before.
    let mut before: Option<(String, chain::Hash)> = None;
    for text in body.split(|&b| b == b'\n') {
        let record = match serde_json::from_slice::<AuditRecord>(text) {
            Ok(record) => record,
            Err(error) => {
                lines.push(Line::Unreadable(error));
                before = None;
                continue;
            }
        };
        let Some(name) = record.chain() else {
            lines.push(Line::Record {
                record,
                reformatted: false,
                hashed: None,
            });
            continue;
        };
        buf.clear();
        record.write_json(buf);
        let reformatted = buf != text;
        let hashed = match &before {
            Some((chain, prev)) if chain == name => Some(Hashed {
                prev: *prev,
                hash: chain::hash_record(prev, &record, buf),
            }),
            _ => None,
        };
        match (record.hash().and_then(chain::from_hex), &mut before) {
            (Some(stored), Some((chain, prev))) if chain == name => *prev = stored,
            (Some(stored), _) => before = Some((name.to_owned(), stored)),
            (None, _) => before = None,
        }
        lines.push(Line::Record {
            record,
            reformatted,
            hashed,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{Chain, Linker};
    use proptest::prelude::*;
    use std::io::Write as _;

    /// Lines as the file sink writes them: records of two chains, in
    /// turns of uneven length, and an unchained record now and then.
    fn lines(n: usize) -> Vec<Vec<u8>> {
        let mut chains = [
            Linker::new(Chain::new("api-1/file")),
            Linker::new(Chain::new("api-2/file")),
        ];
        (0..n)
            .map(|i| {
                let mut record = AuditRecord::builder("invoice.sent")
                    .actor_id(format!("u-{i}"))
                    .detail("n", i as u64)
                    .detail("ratio", i as f64 / 7.0)
                    .build();
                if i % 13 != 5 {
                    chains[(i / 3 + i / 7) % 2].link(&mut record);
                }
                let mut line = Vec::new();
                record.write_json(&mut line);
                line
            })
            .collect()
    }

    /// The same lines checked one by one on this thread, as `check_line`
    /// does: what reading them in parallel must equal.
    fn one_by_one(lines: &[Vec<u8>], path: &Path) -> Verification {
        let mut verifier = Verifier::new();
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_slice::<AuditRecord>(line) {
                Ok(record) => verifier.check_line(&record, line),
                Err(e) => verifier.unreadable(format!("{}:{}", path.display(), i + 1), e),
            }
        }
        verifier.finish()
    }

    fn in_parallel(lines: &[Vec<u8>], path: &Path) -> Verification {
        let mut file = File::create(path).unwrap();
        for line in lines {
            file.write_all(line).unwrap();
            file.write_all(b"\n").unwrap();
        }
        drop(file);
        verify_files(path).unwrap()
    }

    #[derive(Clone, Debug)]
    enum Change {
        Flip { line: usize, at: usize },
        Delete(usize),
        Swap(usize, usize),
        Repeat(usize),
        Garbage(usize),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (any::<usize>(), any::<usize>()).prop_map(|(line, at)| Change::Flip { line, at }),
            any::<usize>().prop_map(Change::Delete),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Change::Swap(a, b)),
            any::<usize>().prop_map(Change::Repeat),
            any::<usize>().prop_map(Change::Garbage),
        ]
    }

    #[test]
    fn untouched_lines_across_many_chunks_verify_with_exact_counts() {
        let lines = lines(400);
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        assert!(bytes > 20 * CHUNK, "{bytes} bytes: too few chunks");
        let dir = tempfile::tempdir().unwrap();
        let v = in_parallel(&lines, &dir.path().join("audit.jsonl"));
        assert!(v.is_intact(), "{v:?}");
        let unchained = (0..400).filter(|i| i % 13 == 5).count() as u64;
        assert_eq!(v.chained(), 400 - unchained, "{v:?}");
        assert_eq!(v.chains.len(), 2, "{v:?}");
    }

    #[test]
    fn a_line_longer_than_a_chunk_and_a_missing_last_newline_are_read() {
        let mut lines = lines(30);
        let mut long = AuditRecord::builder("invoice.sent")
            .detail("notes", "x".repeat(3 * CHUNK))
            .build();
        Linker::new(Chain::new("api-3/file")).link(&mut long);
        let mut line = Vec::new();
        long.write_json(&mut line);
        lines.insert(10, line);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let v = in_parallel(&lines, &path);
        assert!(v.is_intact(), "{v:?}");
        assert_eq!(v.chains.len(), 3, "{v:?}");
        // The same file without its last newline reads the same.
        let text = std::fs::read(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 1]).unwrap();
        let again = verify_files(&path).unwrap();
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&v).unwrap()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever was done to the file, reading it in parallel names
        /// exactly what reading it line by line names.
        #[test]
        fn parallel_reading_names_what_reading_line_by_line_names(
            changes in proptest::collection::vec(change(), 1..6),
        ) {
            let mut lines = lines(120);
            for change in changes {
                let n = lines.len();
                match change {
                    Change::Flip { line, at } => {
                        let line = &mut lines[line % n];
                        let at = at % line.len();
                        line[at] ^= 0x01;
                    }
                    Change::Delete(i) if n > 1 => {
                        lines.remove(i % n);
                    }
                    Change::Delete(_) => {}
                    Change::Swap(a, b) => lines.swap(a % n, b % n),
                    Change::Repeat(i) => {
                        let line = lines[i % n].clone();
                        lines.insert(i % n, line);
                    }
                    Change::Garbage(i) => lines.insert(i % n, b"{\"id\":".to_vec()),
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.jsonl");
            let parallel = in_parallel(&lines, &path);
            let reference = one_by_one(&lines, &path);
            prop_assert_eq!(
                serde_json::to_value(&parallel).unwrap(),
                serde_json::to_value(&reference).unwrap()
            );
        }
    }
}
