//! Sorting a file whose records are out of order before it is imported,
//! in bounded memory: an external merge sort through anonymous temporary
//! files.
//!
//! Records go into every index of the table at their keys; in id (time)
//! order each transaction's rows land side by side, page after page. Out
//! of order, every transaction dirties pages all over the indexes (files
//! of several instances merged by `cat`: PostgreSQL imported such a file
//! at half the rate of the same file in order). So the import first cuts
//! the file into runs of at most [`RUN_BYTES`] of lines, sorts each in
//! memory by id (and line number: copies of one id keep their order) and
//! writes it to a temporary file; then it reads the runs back merged, at
//! most [`FAN_IN`] at a time (more runs are first merged into fewer).
//!
//! The temporary files are anonymous (`O_TMPFILE` where the system has it)
//! in the system's temporary directory (`TMPDIR`): they take about the
//! file's size while the import runs and vanish when it ends, even if the
//! process is killed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

use serde::Deserialize;
use uuid::Uuid;

use super::{bad_line, changed, LineSource, Lines, RecordFile};
use crate::{Error, Result};

/// Bytes of lines sorted in memory at once: one run.
const RUN_BYTES: usize = 32 << 20;

/// Runs read at once by a merge.
const FAN_IN: usize = 64;

/// The buffer of each run read or written.
const BUFFER: usize = 64 << 10;

/// Where a line sorts: its record's id, then its line number.
type Key = (Uuid, u64);

/// The lines of a checked file, in id order, read back from sorted runs.
pub(super) struct Sorted {
    runs: Vec<BufReader<File>>,
    /// The head of each run not yet taken, smallest first.
    heads: BinaryHeap<Reverse<(Key, usize)>>,
    /// The line of each run's head.
    lines: Vec<Vec<u8>>,
    /// The line last taken.
    taken: Vec<u8>,
    path: std::path::PathBuf,
}

impl Sorted {
    /// Cuts the checked part of `file` into sorted runs and opens them
    /// for the merge.
    pub(super) fn sort(file: &RecordFile) -> Result<Self> {
        Self::sort_with(file, RUN_BYTES, FAN_IN)
    }

    fn sort_with(file: &RecordFile, run_bytes: usize, fan_in: usize) -> Result<Self> {
        let path = &file.path;
        let mut lines = Lines::open(path, file.bytes)?;
        let mut runs = Vec::new();
        let mut run = Run::default();
        while let Some((at, line)) = lines.next()? {
            run.push((id_of(path, at, line).map_err(changed)?, at), line);
            if run.text.len() >= run_bytes {
                runs.push(run.write().map_err(|e| cannot_sort(path, e))?);
            }
        }
        if !run.keys.is_empty() {
            runs.push(run.write().map_err(|e| cannot_sort(path, e))?);
        }
        while runs.len() > fan_in {
            let group: Vec<_> = runs.drain(..fan_in).collect();
            let merged = Self::merge(group, path)?
                .into_run()
                .map_err(|e| cannot_sort(path, e))?;
            runs.push(merged);
        }
        Self::merge(runs, path)
    }

    fn merge(runs: Vec<BufReader<File>>, path: &Path) -> Result<Self> {
        let mut sorted = Self {
            lines: vec![Vec::new(); runs.len()],
            heads: BinaryHeap::with_capacity(runs.len()),
            runs,
            taken: Vec::new(),
            path: path.to_owned(),
        };
        for run in 0..sorted.runs.len() {
            sorted.advance(run)?;
        }
        Ok(sorted)
    }

    /// Reads the next entry of `run` into its head.
    fn advance(&mut self, run: usize) -> Result<()> {
        let key = read_entry(&mut self.runs[run], &mut self.lines[run])
            .map_err(|e| cannot_sort(&self.path, e))?;
        if let Some(key) = key {
            self.heads.push(Reverse((key, run)));
        }
        Ok(())
    }

    /// The smallest entry left: its key and line.
    fn next_entry(&mut self) -> Result<Option<Key>> {
        let Some(Reverse((key, run))) = self.heads.pop() else {
            return Ok(None);
        };
        std::mem::swap(&mut self.taken, &mut self.lines[run]);
        self.advance(run)?;
        Ok(Some(key))
    }

    /// Writes what is left, in order, into one run.
    fn into_run(mut self) -> io::Result<BufReader<File>> {
        let mut out = BufWriter::with_capacity(BUFFER, tempfile::tempfile()?);
        while let Some(key) = self.next_entry().map_err(io::Error::other)? {
            write_entry(&mut out, key, &self.taken)?;
        }
        rewind(out)
    }
}

impl LineSource for Sorted {
    fn next_line(&mut self) -> Result<Option<(u64, &str)>> {
        let Some((_, at)) = self.next_entry()? else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&self.taken)
            .map_err(|e| cannot_sort(&self.path, io::Error::new(io::ErrorKind::InvalidData, e)))?;
        Ok(Some((at, line)))
    }
}

/// Lines gathered for one run.
#[derive(Default)]
struct Run {
    /// Each line's key, and where it is in `text`.
    keys: Vec<(Key, usize, usize)>,
    text: Vec<u8>,
}

impl Run {
    fn push(&mut self, key: Key, line: &str) {
        self.keys.push((key, self.text.len(), line.len()));
        self.text.extend_from_slice(line.as_bytes());
    }

    /// Sorts the lines into an anonymous file, rewound for reading; leaves
    /// the run empty.
    fn write(&mut self) -> io::Result<BufReader<File>> {
        self.keys.sort_unstable_by_key(|(key, _, _)| *key);
        let mut out = BufWriter::with_capacity(BUFFER, tempfile::tempfile()?);
        for &(key, start, len) in &self.keys {
            write_entry(&mut out, key, &self.text[start..start + len])?;
        }
        self.keys.clear();
        self.text.clear();
        rewind(out)
    }
}

/// An entry of a run: the id's 16 bytes, the line number and the line's
/// length (little-endian, 8 and 4 bytes), the line.
fn write_entry(out: &mut impl Write, (id, at): Key, line: &[u8]) -> io::Result<()> {
    let len = u32::try_from(line.len()).map_err(io::Error::other)?;
    out.write_all(id.as_bytes())?;
    out.write_all(&at.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(line)
}

/// Reads the next entry of a run into `line`; `None` at its end.
fn read_entry(run: &mut BufReader<File>, line: &mut Vec<u8>) -> io::Result<Option<Key>> {
    if run.fill_buf()?.is_empty() {
        return Ok(None);
    }
    let mut head = [0; 28];
    run.read_exact(&mut head)?;
    let (id, rest) = head.split_at(16);
    let (at, len) = rest.split_at(8);
    let id = Uuid::from_slice(id).map_err(io::Error::other)?;
    let at = u64::from_le_bytes(at.try_into().map_err(io::Error::other)?);
    let len = u32::from_le_bytes(len.try_into().map_err(io::Error::other)?);
    line.clear();
    run.take(u64::from(len)).read_to_end(line)?;
    if line.len() != len as usize {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some((id, at)))
}

fn rewind(out: BufWriter<File>) -> io::Result<BufReader<File>> {
    let mut file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.rewind()?;
    Ok(BufReader::with_capacity(BUFFER, file))
}

/// The id of a record's line, without reading the rest into a record.
fn id_of(path: &Path, at: u64, line: &str) -> Result<Uuid> {
    #[derive(Deserialize)]
    struct Id {
        id: Uuid,
    }
    serde_json::from_str::<Id>(line)
        .map(|record| record.id)
        .map_err(|e| bad_line(path, at, e))
}

fn cannot_sort(path: &Path, error: io::Error) -> Error {
    Error::io(
        format!(
            "cannot sort {} in temporary files (they take about its size in TMPDIR)",
            path.display()
        ),
        error,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuditRecord;

    /// A file of records in a scrambled order, with blank lines, a `\r\n`,
    /// and one record twice (its copies must keep their order).
    fn scrambled(dir: &tempfile::TempDir) -> (RecordFile, Vec<(Key, String)>) {
        let records: Vec<String> = (0..300)
            .map(|i| {
                let record = AuditRecord::builder("post.created")
                    .detail("n", i)
                    .detail("pad", "x".repeat(i * 7 % 50))
                    .build();
                serde_json::to_string(&record).unwrap()
            })
            .collect();
        let mut order: Vec<usize> = (0..300).map(|i| i * 113 % 300).collect();
        order.insert(150, order[20]);
        let mut text = String::new();
        let mut want = Vec::new();
        let mut at = 0;
        for (n, i) in order.into_iter().enumerate() {
            if n % 37 == 0 {
                text.push_str("  \n");
                at += 1;
            }
            at += 1;
            let line = &records[i];
            text.push_str(line);
            text.push_str(if n == 5 { "\r\n" } else { "\n" });
            let id: Uuid = serde_json::from_str::<serde_json::Value>(line).unwrap()["id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            want.push(((id, at), line.clone()));
        }
        let path = dir.path().join("scrambled.jsonl");
        std::fs::write(&path, text).unwrap();
        want.sort();
        (RecordFile::check(&path).unwrap(), want)
    }

    fn drain(mut sorted: Sorted) -> Vec<(Key, String)> {
        let mut out = Vec::new();
        while let Some(key) = sorted.next_entry().unwrap() {
            out.push((key, String::from_utf8(sorted.taken.clone()).unwrap()));
        }
        out
    }

    /// Whether each line is a run of its own merged two at a time through
    /// nine levels, or the whole file one run, every line comes out once,
    /// with its number, in (id, line) order.
    #[test]
    fn runs_merged_in_levels_give_every_line_once_in_id_order() {
        let dir = tempfile::tempdir().unwrap();
        let (file, want) = scrambled(&dir);
        // One transaction's worth: sorting that chunk alone would do, but
        // the sort is what is tested here.
        assert!(file.in_order);
        for (run_bytes, fan_in) in [(1, 2), (700, 3), (5_000, 64), (RUN_BYTES, FAN_IN)] {
            let sorted = Sorted::sort_with(&file, run_bytes, fan_in).unwrap();
            assert_eq!(drain(sorted), want, "runs of {run_bytes} bytes, {fan_in} at a time");
        }
        let mut sorted = Sorted::sort(&file).unwrap();
        let (at, line) = sorted.next_line().unwrap().unwrap();
        assert_eq!((at, line), (want[0].0 .1, want[0].1.as_str()));
    }

    /// A line that no longer parses when the file is sorted (the file was
    /// changed after its check) is named, with its number.
    #[test]
    fn a_line_changed_after_the_check_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (file, _) = scrambled(&dir);
        let text = std::fs::read_to_string(file.path()).unwrap();
        std::fs::write(file.path(), text.replacen("{\"id\":\"", "{\"id\":\"z", 1)).unwrap();
        let error = Sorted::sort(&file).err().unwrap();
        assert!(error.is_invalid_input(), "{error}");
        let want = format!("{}:2: ", file.path().display()); // line 1 is blank
        assert!(error.to_string().starts_with(&want), "{error}");
        assert!(error.to_string().ends_with("(the file changed after it was checked)"), "{error}");
    }
}
