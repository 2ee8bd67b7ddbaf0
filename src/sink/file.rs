//! The JSON-lines file sink: one line per record, one file per UTC day.
//!
//! tracing-appender's rolling appender is not used as the writer: it
//! cannot fsync (the `File` is not exposed), its clock cannot be injected
//! for tests, its pruning matches files by prefix and suffix only, and it
//! reports a failed rotation on stderr and carries on in the old file. This
//! writer is small, owns its file, and reports every failure to the worker,
//! which retries.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Days, NaiveDate, Utc};

use super::{Batch, ChainHead, Sink, SinkError};
use crate::chain::checkpoint::{PurgeStatement, SigningKey};
use crate::{Error, Result, Retention};

type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Writes records as JSON lines to a file that rotates daily (UTC).
///
/// `logs/audit.jsonl` is written as `logs/audit.2026-11-27.jsonl`, then
/// `logs/audit.2026-11-28.jsonl` from the first write after midnight UTC.
/// Each batch is written with one `write` call and flushed before the sink
/// reports success; with [`fsync`](FileSinkBuilder::fsync) it is also synced
/// to disk.
///
/// A failed write (disk full, directory removed) is undone by truncating
/// the file back to its last complete line, and reported to the worker,
/// which retries the batch: the file never holds a torn or duplicated line
/// of this process, and writing resumes when the fault clears (should the
/// undo fail too, it is done again before the next write, even if the day
/// has turned). A line torn by a crash is cut when the file is opened
/// again, its bytes kept in `….jsonl.torn` beside it. One file must have
/// one writing process.
///
/// # Retention and hash chains
///
/// Deleting expired files removes the start of the sink's hash chain, which
/// [`verify`](crate::verify) would report as deleted records. So before it
/// deletes them, the sink appends a *purge statement* to `{prefix}.purges`
/// beside the files (`logs/audit.purges`; synced): the chain, the `seq` of
/// the first record kept, the hash of the last record deleted, the time,
/// the cutoff and how many of the chain's records were deleted (from the
/// first `seq` the files held to the last), signed with the
/// [`purge_key`](FileSinkBuilder::purge_key) if there is one. `verify`
/// reads the statements and accepts a missing prefix that one of them
/// covers and that the first record kept follows. When the statement
/// cannot be written, nothing is deleted (and a warning says why).
///
/// # Examples
///
/// ```
/// use fabric_audit::{AuditLayer, FileSink};
///
/// # fn main() -> fabric_audit::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let file = FileSink::builder(dir.path().join("audit.jsonl"))
///     .retention_days(30)
///     .fsync(true)
///     .build()?;
/// let (layer, audit) = AuditLayer::builder().sink("file", file).build::<tracing_subscriber::Registry>()?;
/// # drop(layer); audit.shutdown_blocking();
/// # Ok(())
/// # }
/// ```
pub struct FileSink {
    names: FileNames,
    retention_days: Option<u32>,
    fsync: bool,
    /// Signs the statements of what retention deleted.
    purge_key: Option<Arc<SigningKey>>,
    clock: Clock,
    current: Option<OpenFile>,
    /// Length to cut the current day's file back to, after a failed write
    /// whose undo failed too.
    repair: Option<(NaiveDate, u64)>,
    buf: Vec<u8>,
}

struct OpenFile {
    date: NaiveDate,
    file: File,
    /// Length of the file up to its last line written by us.
    len: u64,
}

/// Builds a [`FileSink`]; made by [`FileSink::builder`].
///
/// | setting | default |
/// |---|---|
/// | [`retention_days`](Self::retention_days) (`log_retention_days`) | 90 |
/// | [`fsync`](Self::fsync) | off |
#[must_use]
pub struct FileSinkBuilder {
    path: PathBuf,
    retention_days: Option<u32>,
    fsync: bool,
    purge_key: Option<Arc<SigningKey>>,
    clock: Clock,
}

impl FileSink {
    /// Starts building a sink writing to `path`, whose file name is split
    /// at its last dot into the prefix and the suffix of the daily files.
    pub fn builder(path: impl AsRef<Path>) -> FileSinkBuilder {
        FileSinkBuilder {
            path: path.as_ref().to_path_buf(),
            retention_days: Some(90),
            fsync: false,
            purge_key: None,
            clock: Arc::new(Utc::now),
        }
    }

    /// The path of the file for `date`.
    pub fn path_for(&self, date: NaiveDate) -> PathBuf {
        self.names.path(date)
    }

    /// The file for `today`: the open one, or a new one after rotation or
    /// after an error closed it.
    fn open(&mut self, today: NaiveDate) -> io::Result<&mut OpenFile> {
        if self.current.as_ref().is_none_or(|f| f.date != today) {
            self.current = None;
            self.repair_other_day(today);
            let file = self.open_day(today)?;
            self.prune(today);
            self.current = Some(file);
        }
        self.current
            .as_mut()
            .ok_or_else(|| io::Error::other("audit file not open"))
    }

    fn open_day(&mut self, date: NaiveDate) -> io::Result<OpenFile> {
        fs::create_dir_all(&self.names.dir)?;
        let path = self.names.path(date);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut len = file.metadata()?.len();
        if let Some((day, good)) = self.repair {
            if day == date && len > good {
                file.set_len(good)?;
                len = good;
            }
        }
        self.repair = None;
        if len > 0 && last_byte(&mut file)? != b'\n' {
            len = self.cut_torn_tail(&path, &mut file, len)?;
        }
        Ok(OpenFile { date, file, len })
    }

    /// A failed write whose undo failed too left a torn tail in a file
    /// that is no longer today's (the day turned in between): cut it now.
    /// Until that succeeds, it is tried again at every write.
    fn repair_other_day(&mut self, today: NaiveDate) {
        let Some((day, good)) = self.repair.filter(|(day, _)| *day != today) else {
            return;
        };
        let path = self.names.path(day);
        let cut = OpenOptions::new().write(true).open(&path).and_then(|file| {
            if file.metadata()?.len() > good {
                file.set_len(good)?;
                file.sync_all()?;
            }
            Ok(())
        });
        match cut {
            Ok(()) => self.repair = None,
            Err(error) => crate::quiet::to_app(|| {
                tracing::warn!(
                    target: "fabric_audit",
                    file = %path.display(),
                    %error,
                    "cannot cut a torn line from an audit file; retrying at the next write"
                )
            }),
        }
    }

    /// Cuts a line torn by a crash (of an earlier process: this one undoes
    /// its own failed writes) back to the last whole line, so that every
    /// line of the file is a record, and keeps the torn bytes beside the
    /// file (`….jsonl.torn`) rather than losing them. Returns the new
    /// length.
    fn cut_torn_tail(&self, path: &Path, file: &mut File, len: u64) -> io::Result<u64> {
        let whole = last_line_end(file, len)?;
        let mut torn = Vec::with_capacity((len - whole) as usize);
        file.seek(SeekFrom::Start(whole))?;
        file.read_to_end(&mut torn)?;
        let mut aside = path.as_os_str().to_owned();
        aside.push(".torn");
        let mut keep = OpenOptions::new().append(true).create(true).open(&aside)?;
        keep.write_all(&torn)?;
        keep.write_all(b"\n")?;
        keep.sync_all()?;
        file.set_len(whole)?;
        crate::quiet::to_app(|| {
            tracing::warn!(
                target: "fabric_audit",
                file = %path.display(),
                bytes = torn.len(),
                kept_in = %Path::new(&aside).display(),
                "cut a line torn by a crash from an audit file"
            )
        });
        Ok(whole)
    }

    /// Deletes this sink's files dated before the retention window. Only
    /// names of exactly this sink's pattern are touched.
    fn prune(&self, today: NaiveDate) {
        let Some(days) = self.retention_days else {
            return;
        };
        let Ok(entries) = fs::read_dir(&self.names.dir) else {
            return;
        };
        let ours: Vec<(NaiveDate, fs::DirEntry)> = entries
            .flatten()
            .filter_map(|e| Some((self.names.parse(e.file_name().to_str()?)?, e)))
            .collect();
        // A clock that jumps forward must not make fresh files look old:
        // count the window back from the day after the newest earlier
        // file, when that comes before today.
        let newest_before = ours.iter().map(|(d, _)| *d).filter(|d| *d < today).max();
        let until = newest_before
            .and_then(|d| d.succ_opt())
            .map_or(today, |d| d.min(today));
        let Some(oldest) = until.checked_sub_days(Days::new(days.into())) else {
            return;
        };
        let mut expired: Vec<(NaiveDate, PathBuf)> = ours
            .into_iter()
            .filter(|(date, _)| *date < oldest)
            .map(|(date, entry)| (date, entry.path()))
            .collect();
        if expired.is_empty() {
            return;
        }
        expired.sort();
        // The statement first: files deleted without one would show as
        // records deleted by someone else.
        if let Err(error) = self.state_purge(&expired, oldest) {
            crate::quiet::to_app(|| {
                tracing::warn!(
                    target: "fabric_audit",
                    file = %self.names.purges_path().display(),
                    %error,
                    "cannot record the purge of expired audit files: they are kept until it can"
                )
            });
            return;
        }
        for (_, path) in expired {
            if let Err(error) = fs::remove_file(&path) {
                crate::quiet::to_app(|| {
                    tracing::warn!(
                        target: "fabric_audit",
                        file = %path.display(),
                        %error,
                        "cannot delete an expired audit file"
                    )
                });
            }
        }
    }

    /// Appends the statement of a purge of `expired` (sorted by date) to
    /// the purges file, and syncs it: where the chain continues after the
    /// last record they hold. Nothing when that is not a chained record.
    fn state_purge(&self, expired: &[(NaiveDate, PathBuf)], oldest: NaiveDate) -> io::Result<()> {
        let Some((_, newest)) = expired.last() else {
            return Ok(());
        };
        let Some(last) = last_chained_record(newest)? else {
            return Ok(());
        };
        let (Some(chain), Some(seq), Some(head)) = (
            last.chain(),
            last.seq(),
            last.hash().and_then(crate::chain::from_hex),
        ) else {
            return Ok(());
        };
        // How many of the chain's records the files hold: from the seq of
        // the first one to the last, read from the start of the oldest file
        // that has one (reading the files whole would hold up the writes
        // behind this, on the worker thread, for a large day).
        // Files that begin with another chain's records (an instance
        // renamed) are read whole, the rare case.
        let mut first = None;
        'find: for within in [Some(1 << 20), None] {
            for (_, path) in expired {
                first = first_of_chain(path, chain, within)?;
                if first.is_some() {
                    break 'find;
                }
            }
        }
        // The newest file holds at least `last`.
        let records = seq.saturating_sub(first.unwrap_or(seq)) + 1;
        let statement = PurgeStatement {
            chain: chain.to_owned(),
            below_seq: seq + 1,
            head,
            time: (self.clock)(),
            cutoff: oldest.and_time(chrono::NaiveTime::MIN).and_utc(),
            records,
        };
        let note = self.purge_key.as_ref().map(|key| statement.sign(key));
        let mut line = statement.to_json_line(note.as_deref());
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.names.purges_path())?;
        file.write_all(&line)?;
        file.sync_data()
    }

    fn encode(&mut self, batch: &Batch<'_>) {
        self.buf.clear();
        for record in batch {
            record.write_json(&mut self.buf);
            self.buf.push(b'\n');
        }
    }
}

/// The last line of a file that is a chained record (a torn or foreign
/// line after it is passed over), among its last mebibyte.
fn last_chained_record(path: &Path) -> io::Result<Option<crate::AuditRecord>> {
    const TAIL: u64 = 1 << 20;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut tail)?;
    Ok(tail.split(|&b| b == b'\n').rev().find_map(|line| {
        serde_json::from_slice::<crate::AuditRecord>(line)
            .ok()
            .filter(|r| r.chain().is_some() && r.seq().is_some() && r.hash().is_some())
    }))
}

/// The `seq` of the first record of `chain` in a file, among its first
/// `within` bytes if given; read a line at a time.
fn first_of_chain(path: &Path, chain: &str, within: Option<u64>) -> io::Result<Option<u64>> {
    let file = File::open(path)?.take(within.unwrap_or(u64::MAX));
    let mut reader = io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let seq = serde_json::from_slice::<crate::AuditRecord>(text)
            .ok()
            .filter(|r| r.chain() == Some(chain))
            .and_then(|r| r.seq());
        if seq.is_some() {
            return Ok(seq);
        }
    }
}

/// The offset just past the last newline of the file's first `len`
/// bytes (0 if there is none), read backwards a block at a time.
fn last_line_end(file: &mut File, len: u64) -> io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let mut end = len;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(block)?;
        if let Some(i) = block.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

fn last_byte(file: &mut File) -> io::Result<u8> {
    let mut byte = [0u8];
    file.seek(SeekFrom::End(-1))?;
    file.read_exact(&mut byte)?;
    Ok(byte[0])
}

impl FileSink {
    /// Appends `buf` to today's file; on failure, undoes the partial write.
    fn append(&mut self, today: NaiveDate, buf: &[u8]) -> io::Result<()> {
        let fsync = self.fsync;
        if self.repair.is_some() {
            self.repair_other_day(today);
        }
        let open = self.open(today)?;
        let written =
            open.file
                .write_all(buf)
                .and_then(|()| if fsync { open.file.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => {
                open.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Undo the partial batch: the retry writes it whole.
                let (date, len) = (open.date, open.len);
                if open.file.set_len(len).is_err() {
                    self.repair = Some((date, len));
                }
                self.current = None;
                Err(e)
            }
        }
    }
}

impl Sink for FileSink {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        self.encode(batch);
        let today = (self.clock)().date_naive();
        let buf = std::mem::take(&mut self.buf);
        let result = self.append(today, &buf);
        self.buf = buf;
        Ok(result?)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        if let Some(open) = self.current.take() {
            open.file.sync_all()?;
        }
        Ok(())
    }

    /// The file sink chains its records; a new run continues after the
    /// last whole line of `chain` in the newest of its files.
    fn chain_head(&mut self, chain: &str) -> Result<ChainHead, SinkError> {
        Ok(match self.last_of_chain(chain)? {
            Some((seq, hash)) => ChainHead::Last { seq, hash },
            None => ChainHead::Empty,
        })
    }
}

impl FileSink {
    /// The `seq` and `hash` of the last record of `chain` in this sink's
    /// files: read backwards from the last whole line, a block at a time,
    /// newest file first. Only lines that hold the chain's `"chain":…` text
    /// are parsed, and only the two newest files are read: a chain whose
    /// last record is older (an instance stopped for days while another
    /// one wrote into the same directory) starts again at 1, which
    /// verification names; the sink's own previous day is always among
    /// them. Before this bound, an instance new to a directory (or the
    /// first start after an upgrade, all records unchained) read every
    /// line of every file, one 64 KiB read per line.
    fn last_of_chain(&self, chain: &str) -> io::Result<Option<(u64, String)>> {
        const FILES: usize = 2;
        const BLOCK: u64 = 1 << 20;
        let mut days: Vec<NaiveDate> = match fs::read_dir(&self.names.dir) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|e| self.names.parse(e.file_name().to_str()?))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        days.sort_unstable_by(|a, b| b.cmp(a));
        // The chain as a line of this sink spells it.
        let needle = format!(",\"chain\":{}", serde_json::Value::from(chain));
        let (mut buf, mut carry) = (Vec::new(), Vec::new());
        for day in days.into_iter().take(FILES) {
            let mut file = match File::open(self.names.path(day)) {
                Ok(file) => file,
                // Pruned meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // A torn tail is no record.
            let len = file.metadata()?.len();
            let mut end = last_line_end(&mut file, len)?;
            carry.clear();
            while end > 0 {
                // `buf`: a block, then the start of the line it cuts
                // (`carry`, read before); its lines from the first newline
                // on are whole.
                let start = end.saturating_sub(BLOCK);
                buf.resize((end - start) as usize, 0);
                file.seek(SeekFrom::Start(start))?;
                file.read_exact(&mut buf)?;
                buf.extend_from_slice(&carry);
                let whole = match buf.iter().position(|&b| b == b'\n') {
                    _ if start == 0 => 0,
                    Some(at) => at + 1,
                    None => buf.len(),
                };
                for line in buf[whole..].split(|&b| b == b'\n').rev() {
                    if let Some(head) = head_of(line, chain, needle.as_bytes()) {
                        return Ok(Some(head));
                    }
                }
                carry.clear();
                carry.extend_from_slice(&buf[..whole]);
                end = start;
            }
        }
        Ok(None)
    }
}

/// The `seq` and `hash` of `line` if it is a record of `chain`; lines
/// without the chain's text (`needle`) are not parsed.
fn head_of(line: &[u8], chain: &str, needle: &[u8]) -> Option<(u64, String)> {
    if !line.windows(needle.len()).any(|w| w == needle) {
        return None;
    }
    let record = serde_json::from_slice::<crate::AuditRecord>(line).ok()?;
    if record.chain() != Some(chain) {
        return None;
    }
    Some((record.seq()?, record.hash()?.to_owned()))
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("names", &self.names)
            .field("retention_days", &self.retention_days)
            .field("fsync", &self.fsync)
            .finish_non_exhaustive()
    }
}

impl FileSinkBuilder {
    /// How many days of rotated files to keep besides the current one
    /// (`log_retention_days`, 1 to [`Retention::MAX_DAYS`]): at each start
    /// and rotation, files of this sink dated more than this many days
    /// before today are deleted. A clock that jumps forward deletes
    /// nothing newer than this many days before the newest earlier file.
    pub fn retention_days(self, days: u32) -> Self {
        Self {
            retention_days: Some(days),
            ..self
        }
    }

    /// Keep rotated files for this long: [`Retention::days`] or
    /// [`Retention::FOREVER`].
    pub fn retention(self, retention: Retention) -> Self {
        Self {
            retention_days: retention.as_days(),
            ..self
        }
    }

    /// Never delete rotated files.
    pub fn keep_forever(self) -> Self {
        Self {
            retention_days: None,
            ..self
        }
    }

    /// Sync each batch to disk (`fdatasync`) before reporting it written:
    /// records then survive a power loss, at the cost of one disk flush per
    /// batch.
    pub fn fsync(self, fsync: bool) -> Self {
        Self { fsync, ..self }
    }

    /// Signs the statement each retention purge writes (see
    /// [`FileSink`]'s "Retention and hash chains") with `key`, as
    /// checkpoints are: an auditor holding the public key can then tell
    /// files deleted by retention from files deleted by anyone else.
    /// [`AuditLayerBuilder::checkpoint_key`](crate::AuditLayerBuilder::checkpoint_key)
    /// sets it for the file sink the layer builder adds.
    pub fn purge_key(self, key: SigningKey) -> Self {
        self.purge_key_shared(Arc::new(key))
    }

    pub(crate) fn purge_key_shared(self, key: Arc<SigningKey>) -> Self {
        Self {
            purge_key: Some(key),
            ..self
        }
    }

    #[cfg(test)]
    pub(crate) fn clock(self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Self {
            clock: Arc::new(clock),
            ..self
        }
    }

    /// Creates the directory, opens today's file and prunes expired files.
    ///
    /// # Errors
    ///
    /// A retention of zero days or more than [`Retention::MAX_DAYS`], a path
    /// without a file name, or a directory or file that cannot be created or
    /// opened.
    pub fn build(self) -> Result<FileSink> {
        if let Some(days) = self.retention_days {
            Retention::days(days)
                .map_err(|e| Error::config("file sink `log_retention_days`").because(e))?;
        }
        let names = FileNames::from_path(&self.path).ok_or_else(|| {
            Error::config(format!(
                "audit file path has no file name: {}",
                self.path.display()
            ))
        })?;
        let mut sink = FileSink {
            names,
            retention_days: self.retention_days,
            fsync: self.fsync,
            purge_key: self.purge_key,
            clock: self.clock,
            current: None,
            repair: None,
            buf: Vec::with_capacity(256 * 1024),
        };
        let today = (sink.clock)().date_naive();
        let path = sink.names.path(today);
        sink.open(today)
            .map_err(|e| Error::io(format!("cannot open audit file {}", path.display()), e))?;
        Ok(sink)
    }
}

impl std::fmt::Debug for FileSinkBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSinkBuilder")
            .field("path", &self.path)
            .field("retention_days", &self.retention_days)
            .field("fsync", &self.fsync)
            .finish_non_exhaustive()
    }
}

/// The extension of the file of purge statements beside the daily files.
pub(crate) const PURGES_EXTENSION: &str = "purges";

/// The daily file names of one sink: `{prefix}.{YYYY-MM-DD}[.{suffix}]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileNames {
    dir: PathBuf,
    prefix: String,
    suffix: Option<String>,
}

impl FileNames {
    fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?;
        let (prefix, suffix) = match name.rsplit_once('.') {
            Some((prefix, suffix)) if !prefix.is_empty() => (prefix, Some(suffix.to_owned())),
            _ => (name, None),
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Some(Self {
            dir,
            prefix: prefix.to_owned(),
            suffix,
        })
    }

    fn name(&self, date: NaiveDate) -> String {
        match &self.suffix {
            Some(suffix) => format!("{}.{}.{suffix}", self.prefix, date.format("%Y-%m-%d")),
            None => format!("{}.{}", self.prefix, date.format("%Y-%m-%d")),
        }
    }

    fn path(&self, date: NaiveDate) -> PathBuf {
        self.dir.join(self.name(date))
    }

    /// Where retention states what it deleted: `{prefix}.purges`.
    fn purges_path(&self) -> PathBuf {
        self.dir.join(format!("{}.{PURGES_EXTENSION}", self.prefix))
    }

    /// The date of a file name of exactly this pattern.
    fn parse(&self, name: &str) -> Option<NaiveDate> {
        let rest = name.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let date = match &self.suffix {
            Some(suffix) => rest.strip_suffix(suffix)?.strip_suffix('.')?,
            None => rest,
        };
        let parsed = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        // Only the canonical spelling: `2026-1-5` is not one of ours.
        (parsed.format("%Y-%m-%d").to_string() == date).then_some(parsed)
    }
}

#[cfg(test)]
mod tests;
