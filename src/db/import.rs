//! Loading JSON-lines files (the file sink's, or a stream's export) into
//! the table: what `fabric-audit import` runs.
//!
//! Two passes over each file, both streaming: [`RecordFile::check`] parses
//! every line and keeps nothing, so a file with a bad line is refused
//! before anything of it is written; [`DatabaseSink::import_file`] reads it
//! again and writes it in large transactions. A file whose records are out
//! of order is first sorted by id through temporary files (`sort`), so
//! that the rows go into the indexes in order. Memory is a few
//! transactions' records (or, while sorting, one run of 32 MiB), whatever
//! the file's size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use uuid::Uuid;

use crate::sink::Batch;
use crate::{AuditRecord, DatabaseSink, Error, Result};

mod sort;

/// The longest line read, in bytes: a record is far smaller (the database
/// sink keeps at most 8 MiB of detail), and a file without newlines must
/// not be read into memory whole.
const MAX_LINE: u64 = 16 << 20;

/// Records per transaction: large enough that each index page a
/// transaction dirties takes many rows (on SQLite, a commit writes every
/// dirty page once), small enough that two of them in memory stay within
/// a few tens of MB.
const ROWS_PER_TRANSACTION: usize = 10_000;

/// Bytes of lines per transaction at most: records with large details
/// make smaller transactions, not more memory. (10 000 records of the
/// file sink's usual size are 3 to 6 MiB.)
const BYTES_PER_TRANSACTION: usize = 4 << 20;

/// The import's SQLite connection keeps up to 32 MiB of pages (the
/// default is 2 MiB): a transaction of thousands of records touches pages
/// all over the indexes, and every page read back from the file costs a
/// system call. And it lets the write-ahead log grow to 25 000 pages
/// (about 100 MB) before copying it into the database (the default is
/// 1 000: after nearly every transaction), so that a page changed by many
/// transactions is copied, and synced, once: 1.3x the rows per second
/// (200 000 records, 6.7 k → 8.6 k rows/s on the bench's machine). Journal
/// and sync settings stay the sink's (WAL, NORMAL): an import is as
/// crash-safe as the sink's writes, and transactions stay short, so a
/// sink writing into the same database waits no longer than before.
const SQLITE_PRAGMAS: &str = "PRAGMA cache_size = -32768; PRAGMA wal_autocheckpoint = 25000;";

/// A JSON-lines file of audit records whose every line parsed: the only
/// kind of file [`DatabaseSink::import_file`] takes.
///
/// Blank lines are skipped; a line may end in `\n` or `\r\n`, and the last
/// one need not end at all.
///
/// # Examples
///
/// ```
/// use fabric_audit::{AuditRecord, RecordFile};
///
/// # fn main() -> fabric_audit::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("audit.jsonl");
/// let record = AuditRecord::builder("post.created").build();
/// std::fs::write(&path, format!("{}\n\n", serde_json::to_string(&record).unwrap())).unwrap();
/// assert_eq!(RecordFile::check(&path)?.records(), 1);
///
/// std::fs::write(&path, "{\"id\": \"nope\"}\n").unwrap();
/// let error = RecordFile::check(&path).unwrap_err();
/// assert!(error.is_invalid_input());
/// assert!(error.to_string().contains("audit.jsonl:1: "), "{error}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RecordFile {
    path: PathBuf,
    records: u64,
    /// The bytes checked: what the import reads, even if the file has
    /// grown since (a file sink's file of today).
    bytes: u64,
    /// Whether its records come in id order once each transaction's share
    /// is sorted (a file sink's file, give or take a few lines). If not
    /// (files merged by `cat`, or shuffled), the import sorts them first.
    in_order: bool,
}

impl RecordFile {
    /// Reads the file at `path` line by line and parses each line as a
    /// record, keeping none of them.
    ///
    /// Blocks: from async code call it inside `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// The file cannot be read; or a line is not a record (bad JSON, a
    /// missing `action`, a bad id…), longer than 16 MiB or not UTF-8: an
    /// [invalid input](Error::is_invalid_input) error whose message starts
    /// with `file:line: `.
    pub fn check(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut lines = Lines::open(path, u64::MAX)?;
        let (mut records, mut order) = (0, Order::default());
        while let Some((at, line)) = lines.next()? {
            order.push(parse(path, at, line)?.id(), line.len());
            records += 1;
        }
        Ok(Self {
            path: path.to_owned(),
            records,
            bytes: lines.read,
            in_order: order.finish(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many records it holds.
    pub fn records(&self) -> u64 {
        self.records
    }
}

/// What [`DatabaseSink::import_file`] did with a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportedFile {
    /// Records stored now.
    pub stored: u64,
    /// Records already stored, with the same content.
    pub present: u64,
    /// Line and id of each record whose id is stored with other content
    /// (or given twice with different content): not stored.
    pub conflicting: Vec<(u64, Uuid)>,
    /// Line and id of each record the database refused for its data: not
    /// stored.
    pub refused: Vec<(u64, Uuid)>,
}

impl DatabaseSink {
    /// Stores the records of a checked file that are not stored yet, in
    /// transactions of thousands of records, calling `progress` with the
    /// number of records handled after each. Records already stored with
    /// the same content are counted as present; a stored id with other
    /// content is a conflict (not stored), like [`import`](Self::import).
    ///
    /// The file is read again, up to where it was checked, by a thread of
    /// its own while the records are written: memory stays at a few
    /// transactions' records, whatever the file's size. A file whose
    /// records are out of id (time) order, as several instances' files
    /// joined into one, is first sorted through anonymous temporary files
    /// in `TMPDIR`, which take about the file's size until the import ends;
    /// written in order, the rows fill each index page after page.
    /// Copies of one id keep their order in the file: the first is stored.
    ///
    /// A failure midway (the database gone) leaves the transactions
    /// committed before it stored: records are stored by id, so importing
    /// the file again stores the rest and counts these as present.
    ///
    /// Blocks: from async code call it inside `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// The database could not be reached or failed for a reason other than
    /// the data; the file cannot be read again, or a line changed since it
    /// was checked (invalid input, `file:line: `).
    ///
    /// # Examples
    ///
    /// ```
    /// use fabric_audit::{AuditRecord, DatabaseSink, RecordFile};
    ///
    /// # fn main() -> fabric_audit::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    /// let path = dir.path().join("audit.jsonl");
    /// let record = AuditRecord::builder("post.created").build();
    /// std::fs::write(&path, serde_json::to_string(&record).unwrap() + "\n").unwrap();
    ///
    /// let file = RecordFile::check(&path)?;
    /// let mut db = DatabaseSink::builder(&url).keep_forever().build()?;
    /// assert_eq!(db.import_file(&file, |_| {})?.stored, 1);
    /// let again = db.import_file(&file, |_| {})?;
    /// assert_eq!((again.stored, again.present), (0, 1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn import_file(
        &mut self,
        file: &RecordFile,
        mut progress: impl FnMut(u64),
    ) -> Result<ImportedFile> {
        self.sqlite_pragmas(SQLITE_PRAGMAS)?;
        let mut imported = ImportedFile::default();
        std::thread::scope(|scope| {
            // One chunk queued while one is written: the reading and
            // parsing overlap the database's work.
            let (chunks, rx) = mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name("fabric-audit-import".into())
                .spawn_scoped(scope, || read_chunks(file, chunks))
                .map_err(|e| Error::io("cannot start the import's reading thread", e))?;
            for chunk in rx {
                let chunk: Chunk = chunk?;
                let done = self.import(&Batch::new(&chunk.records))?;
                imported.stored += done.stored as u64;
                imported.present += done.present as u64;
                if !(done.conflicting.is_empty() && done.refused.is_empty()) {
                    let lines = chunk.lines_by_id();
                    let at = |id: Uuid| (lines.get(&id).copied().unwrap_or(0), id);
                    imported.conflicting.extend(done.conflicting.into_iter().map(at));
                    imported.refused.extend(done.refused.into_iter().map(at));
                }
                progress(chunk.records.len() as u64);
            }
            Ok(imported)
        })
    }
}

/// Whether a chunk of `rows` records with `bytes` of lines is full.
fn chunk_full(rows: usize, bytes: usize) -> bool {
    rows == ROWS_PER_TRANSACTION || bytes >= BYTES_PER_TRANSACTION
}

/// Follows the ids of a file's records, cut into chunks as
/// [`read_chunks`] cuts them, to tell whether sorting each chunk puts the
/// whole file in id order: no chunk holds an id below one of an earlier
/// chunk.
#[derive(Default)]
struct Order {
    rows: usize,
    bytes: usize,
    /// The lowest and highest id of the chunk being read.
    chunk: Option<(Uuid, Uuid)>,
    /// The highest id of the chunks before it.
    before: Option<Uuid>,
    broken: bool,
}

impl Order {
    fn push(&mut self, id: Uuid, line: usize) {
        self.chunk = Some(match self.chunk {
            Some((low, high)) => (low.min(id), high.max(id)),
            None => (id, id),
        });
        self.rows += 1;
        self.bytes += line;
        if chunk_full(self.rows, self.bytes) {
            self.close();
        }
    }

    fn close(&mut self) {
        if let Some((low, high)) = self.chunk.take() {
            self.broken |= self.before.is_some_and(|before| low < before);
            self.before = Some(self.before.map_or(high, |before| before.max(high)));
        }
        (self.rows, self.bytes) = (0, 0);
    }

    /// Whether the file is in order.
    fn finish(mut self) -> bool {
        self.close();
        !self.broken
    }
}

/// Records of one transaction, with their lines.
struct Chunk {
    records: Vec<Arc<AuditRecord>>,
    lines: Vec<u64>,
}

impl Chunk {
    /// In id order, which is time order: the rows of a shuffled file then
    /// go into each index in key order, page after page. Stable: copies of
    /// one id keep their order, and the first is the one stored.
    fn sort_by_id(&mut self) {
        let mut pairs: Vec<(Arc<AuditRecord>, u64)> =
            self.records.drain(..).zip(self.lines.drain(..)).collect();
        pairs.sort_by_key(|(record, _)| record.id());
        (self.records, self.lines) = pairs.into_iter().unzip();
    }

    /// The line of each record by id (the last, if one is there twice: a
    /// conflict is found at the later copy): built only when something
    /// went wrong.
    fn lines_by_id(&self) -> HashMap<Uuid, u64> {
        let ids = self.records.iter().map(|r| r.id());
        ids.zip(self.lines.iter().copied()).collect()
    }
}

/// Reads the checked part of `file` into chunks for the writer, until the
/// end, a bad line, or the writer hanging up.
fn read_chunks(file: &RecordFile, chunks: mpsc::SyncSender<Result<Chunk>>) {
    let source = if file.in_order {
        Lines::open(&file.path, file.bytes).map(|lines| Box::new(lines) as Box<dyn LineSource>)
    } else {
        sort::Sorted::sort(file).map(|sorted| Box::new(sorted) as Box<dyn LineSource>)
    };
    let mut lines = match source {
        Ok(lines) => lines,
        Err(e) => return drop(chunks.send(Err(e))),
    };
    loop {
        let mut chunk = Chunk {
            records: Vec::with_capacity(ROWS_PER_TRANSACTION),
            lines: Vec::with_capacity(ROWS_PER_TRANSACTION),
        };
        let mut bytes = 0;
        let end = loop {
            match lines.next_line() {
                Ok(Some((at, line))) => match parse(&file.path, at, line) {
                    Ok(record) => {
                        bytes += line.len();
                        chunk.records.push(Arc::new(record));
                        chunk.lines.push(at);
                    }
                    Err(e) => break Some(Err(changed(e))),
                },
                Ok(None) => break Some(Ok(())),
                Err(e) => break Some(Err(changed(e))),
            }
            if chunk_full(chunk.records.len(), bytes) {
                break None;
            }
        };
        chunk.sort_by_id();
        if !chunk.records.is_empty() && chunks.send(Ok(chunk)).is_err() {
            return;
        }
        match end {
            None => {}
            Some(Ok(())) => return,
            Some(Err(e)) => return drop(chunks.send(Err(e))),
        }
    }
}

/// A line that parsed when checked and does not now.
fn changed(error: Error) -> Error {
    if error.is_invalid_input() {
        Error::invalid(format!("{error} (the file changed after it was checked)"))
    } else {
        error
    }
}

fn parse(path: &Path, at: u64, line: &str) -> Result<AuditRecord> {
    serde_json::from_str(line).map_err(|e| bad_line(path, at, e))
}

fn bad_line(path: &Path, at: u64, error: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{}:{at}: {error}", path.display()))
}

/// Where the import reads its lines: the file, or its sorted runs.
trait LineSource {
    /// The next line that is not blank, without its line end, and its
    /// number in the file (from 1); `None` at the end.
    fn next_line(&mut self) -> Result<Option<(u64, &str)>>;
}

impl LineSource for Lines {
    fn next_line(&mut self) -> Result<Option<(u64, &str)>> {
        self.next()
    }
}

/// A file's non-blank lines, one at a time, in one reused buffer.
struct Lines {
    path: PathBuf,
    reader: std::io::Take<BufReader<File>>,
    buf: Vec<u8>,
    /// The number of the line in `buf`.
    at: u64,
    /// Bytes read so far.
    read: u64,
}

impl Lines {
    /// The first `limit` bytes of the file at `path`.
    fn open(path: &Path, limit: u64) -> Result<Self> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::with_capacity(1 << 16, file).take(limit),
            buf: Vec::new(),
            at: 0,
            read: 0,
        })
    }

    /// The next line that is not blank, without its line end, and its
    /// number (from 1); `None` at the end.
    fn next(&mut self) -> Result<Option<(u64, &str)>> {
        let len = loop {
            self.buf.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| Error::io(format!("cannot read {}", self.path.display()), e))?;
            if n == 0 {
                return Ok(None);
            }
            self.at += 1;
            self.read += n as u64;
            let mut line = &self.buf[..];
            if let Some(rest) = line.strip_suffix(b"\n") {
                line = rest.strip_suffix(b"\r").unwrap_or(rest);
            } else if line.len() as u64 > MAX_LINE {
                let mib = MAX_LINE >> 20;
                return Err(bad_line(&self.path, self.at, format!("longer than {mib} MiB")));
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                break line.len();
            }
        };
        let line = std::str::from_utf8(&self.buf[..len])
            .map_err(|e| bad_line(&self.path, self.at, format!("not UTF-8: {e}")))?;
        Ok(Some((self.at, line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sorting each chunk puts the file in order unless a chunk holds an
    /// id below one of an earlier chunk.
    #[test]
    fn order_is_broken_only_by_an_id_below_an_earlier_chunks() {
        // Two records per chunk.
        let half = BYTES_PER_TRANSACTION / 2;
        let in_order = |ids: &[u128]| {
            let mut order = Order::default();
            for &n in ids {
                order.push(Uuid::from_u128(n), half);
            }
            order.finish()
        };
        assert!(in_order(&[]));
        assert!(in_order(&[2, 1, 4, 3, 6, 5]), "out of order within chunks only");
        assert!(in_order(&[1, 2, 2, 3]), "equal ids across chunks");
        assert!(in_order(&[1, 2, 3]), "a last chunk of one");
        assert!(!in_order(&[1, 3, 2, 4]));
        assert!(!in_order(&[5, 6, 1, 2, 7, 8]));
        assert!(!in_order(&[1, 9, 3, 4, 5]));
        assert!(!in_order(&[3, 4, 1]), "the last chunk counts");
    }
}
