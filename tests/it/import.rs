//! `fabric-audit import` end to end on SQLite: streaming in bounded
//! memory, idempotent, all-or-nothing per file for bad lines, hostile
//! lines, conflicts named by file and line past the first transaction.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fabric_audit::AuditRecord;

use crate::cli::{cli, text};

/// A temp dir with a SQLite URL in it.
struct Setup {
    dir: tempfile::TempDir,
    url: String,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        Self { dir, url }
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn import(&self, files: &[&Path]) -> (Option<i32>, String, String) {
        let mut args = vec!["import", "--database-url", &self.url];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        let out = cli(&args);
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    }

    /// The ids of `audit_events` in the order the rows were inserted.
    fn ids_in_insertion_order(&self) -> Vec<String> {
        use diesel::{Connection, ExpressionMethods, QueryDsl, RunQueryDsl};
        diesel::table! { audit_events (rowid) { rowid -> BigInt, id -> Text, } }
        let path = self.url.trim_start_matches("sqlite://");
        let mut conn = diesel::SqliteConnection::establish(path).unwrap();
        audit_events::table
            .select(audit_events::id)
            .order(audit_events::rowid.asc())
            .load(&mut conn)
            .unwrap()
    }

    /// The rows of `audit_events`.
    fn rows(&self) -> i64 {
        use diesel::{Connection, QueryDsl, RunQueryDsl};
        diesel::table! { audit_events (id) { id -> Text, } }
        let path = self.url.trim_start_matches("sqlite://");
        let mut conn = match diesel::SqliteConnection::establish(path) {
            Ok(conn) => conn,
            Err(e) => panic!("{path}: {e}"),
        };
        // No table yet: nothing was ever written.
        let rows: Result<i64, _> = audit_events::table.count().get_result(&mut conn);
        rows.unwrap_or_default()
    }
}

/// `n` records as JSON lines, each ending in `\n`.
fn lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let record = AuditRecord::builder("post.created")
                .actor_id(format!("u-{}", i % 7))
                .resource("post", i.to_string())
                .detail("n", i as u64)
                .build();
            serde_json::to_string(&record).unwrap() + "\n"
        })
        .collect()
}

fn summary(read: usize, files: usize, stored: usize, present: usize, not: usize) -> String {
    format!(
        "read {read} records from {files} file(s): {stored} stored, {present} already present, {not} not imported\n"
    )
}

/// More records than two transactions take (10 000 each): the second run finds
/// every one stored, and an edited record in the second transaction is
/// named by its own line.
#[test]
fn a_second_import_stores_nothing_and_names_a_conflicts_line() {
    const N: usize = 20_500;
    let setup = Setup::new();
    let all = lines(N);
    let file = setup.write("big.jsonl", all.concat());
    assert_eq!(
        setup.import(&[&file]),
        (Some(0), summary(N, 1, N, 0, 0), String::new())
    );
    assert_eq!(
        setup.import(&[&file]),
        (Some(0), summary(N, 1, 0, N, 0), String::new())
    );
    assert_eq!(setup.rows(), N as i64);

    assert_an_edited_line_is_named(&setup, all, 20_321);
}

/// Edits the record on line `at` (from 1) of the `all` lines already
/// imported and imports them again: nothing is stored, and the conflict is
/// named by the file and that line.
fn assert_an_edited_line_is_named(setup: &Setup, mut all: Vec<String>, at: usize) -> String {
    let n = all.len();
    all[at - 1] = all[at - 1].replace("post.created", "post.edited");
    let id = all[at - 1][7..43].to_owned();
    let edited = setup.write("edited.jsonl", all.concat());
    let (code, out, err) = setup.import(&[&edited]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out, summary(n, 1, 0, n - 1, 1));
    let want = format!(
        "error: {}:{at}: record {id} is stored with other content: not imported\n",
        edited.display()
    );
    assert!(err.starts_with(&want), "{err}");
    assert_eq!(setup.rows(), n as i64);
    id
}

/// A file out of order (several instances' files joined, here a fixed
/// scramble) is sorted before it is written: the rows go in in id order
/// across transactions, a second import stores nothing, and an edited
/// record is still named by its own line in the file.
#[test]
fn a_shuffled_file_is_written_in_id_order_and_conflicts_keep_their_lines() {
    const N: usize = 20_500;
    let setup = Setup::new();
    let ordered = lines(N);
    // 7 919 is prime and divides neither 2, 5 nor 41: a permutation of N.
    let all: Vec<String> = (0..N).map(|i| ordered[i * 7919 % N].clone()).collect();
    let file = setup.write("shuffled.jsonl", all.concat());
    assert_eq!(
        setup.import(&[&file]),
        (Some(0), summary(N, 1, N, 0, 0), String::new())
    );
    let stored = setup.ids_in_insertion_order();
    let mut sorted = stored.clone();
    sorted.sort();
    assert_eq!(stored.len(), N);
    assert!(stored == sorted, "rows were not written in id order");
    assert_eq!(
        setup.import(&[&file]),
        (Some(0), summary(N, 1, 0, N, 0), String::new())
    );

    // Sorted, the record on line 321 went in at another place.
    let id = assert_an_edited_line_is_named(&setup, all, 321);
    assert_ne!(stored[321 - 1], id);
}

/// An out-of-order file whose sort cannot get temporary files (`TMPDIR`
/// gone, as a full disk would fail it) is refused with one line naming the
/// file and `TMPDIR`, before anything of it is written.
#[test]
fn a_sort_without_temporary_files_writes_nothing_and_says_why() {
    let setup = Setup::new();
    let ordered = lines(20_500);
    let reversed: Vec<String> = ordered.into_iter().rev().collect();
    let file = setup.write("reversed.jsonl", reversed.concat());
    let out = Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
        .args(["import", "--database-url", &setup.url])
        .arg(&file)
        .env_remove("FABRIC_AUDIT_DATABASE_URL")
        .env("TMPDIR", setup.dir.path().join("no-such-dir"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let want = format!("cannot sort {} in temporary files", file.display());
    assert!(err.contains(&want) && err.contains("TMPDIR"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(setup.rows(), 0);
}

/// A bad line anywhere in any file: nothing is written, from that file or
/// the others, and one line on stderr names the file and the line.
#[test]
fn a_bad_line_anywhere_writes_nothing() {
    let good = lines(30);
    for at in [1, 15, 30] {
        let setup = Setup::new();
        let first = setup.write("first.jsonl", good.concat());
        let mut bad = lines(30);
        bad[at - 1] = "{\"id\": \"nope\"}\n".into();
        let second = setup.write("second.jsonl", bad.concat());
        let (code, out, err) = setup.import(&[&first, &second]);
        assert_eq!(code, Some(2), "line {at}: {err}");
        assert_eq!(out, "");
        assert_eq!(err.lines().count(), 1, "{err}");
        let place = format!("error: {}:{at}: ", second.display());
        assert!(err.starts_with(&place), "line {at}: {err}");
        assert_eq!(setup.rows(), 0, "line {at}");
    }
}

/// Records stored, or the refused line and what the error says.
type Want = Result<usize, (usize, &'static str)>;

/// What hostile bytes do: each case is imported or refused with its line.
#[test]
fn hostile_lines_are_imported_or_refused_with_their_line() {
    let record =
        |action: &str| serde_json::to_string(&AuditRecord::builder(action).build()).unwrap();
    let a = record("a.b");
    let b = record("c.d");
    let big = serde_json::to_string(
        &AuditRecord::builder("big")
            .detail("text", "x".repeat(1 << 20))
            .build(),
    )
    .unwrap();
    let with = |key: &str, json: &str| {
        let mut value = serde_json::to_value(AuditRecord::builder("k.v").build()).unwrap();
        value[key] = serde_json::from_str(json).unwrap_or_else(|_| json.into());
        value.to_string()
    };
    let huge_int = a.replacen("\"seq\":null", "\"seq\":18446744073709551616", 1);
    let d = serde_json::to_string(&AuditRecord::builder("e.f").detail("k", 1).build()).unwrap();
    let huge_float = d.replacen("\"detail\":{", "\"detail\":{\"x\":1e400,", 1);
    let big_detail_int = d.replacen(
        "\"detail\":{",
        "\"detail\":{\"x\":123456789012345678901234567890,",
        1,
    );
    let cases: Vec<(Vec<u8>, Want)> = vec![
        (format!("\n\n{a}\n   \n\t\n{b}\n\n").into(), Ok(2)),
        (format!("{a}\r\n{b}\r\n").into(), Ok(2)),
        (format!("{a}\n{b}").into(), Ok(2)),
        (Vec::new(), Ok(0)),
        (format!("{a}\n{big}\n").into(), Ok(2)),
        (
            with("action", "\"nul\\u0000 and \\u001b escape\"").into_bytes(),
            Ok(1),
        ),
        (format!("{big_detail_int}\n").into(), Ok(1)),
        (
            format!("{a}\n{}\n", a.replacen("a.b", "a\0b", 1)).into(),
            Err((2, "control character")),
        ),
        (
            format!("{a}\n{}\n", b.replacen("c.d", "c\u{1}d", 1)).into(),
            Err((2, "control character")),
        ),
        (
            format!("{a}\r{b}\n").into(),
            Err((1, "trailing characters")),
        ),
        (
            [a.as_bytes(), b"\n\xff\xfe\n"].concat(),
            Err((2, "not UTF-8")),
        ),
        (format!("{huge_int}\n").into(), Err((1, "expected u64"))),
        (
            format!("{a}\n{huge_float}\n").into(),
            Err((2, "out of range")),
        ),
        (format!("{a}\n{b}\n{{\n").into(), Err((3, "EOF"))),
        (format!("{a}\n\0\n").into(), Err((2, "expected value"))),
        (
            format!("{a}\n{}\n", "x".repeat(17 << 20)).into(),
            Err((2, "longer than 16 MiB")),
        ),
    ];
    for (i, (content, want)) in cases.into_iter().enumerate() {
        let setup = Setup::new();
        let file = setup.write("hostile.jsonl", &content);
        let (code, out, err) = setup.import(&[&file]);
        match want {
            Ok(n) => {
                assert_eq!(
                    (code, out),
                    (Some(0), summary(n, 1, n, 0, 0)),
                    "case {i}: {err}"
                );
                assert_eq!(setup.rows(), n as i64, "case {i}");
            }
            Err((line, says)) => {
                assert_eq!(code, Some(2), "case {i}: {out} {err}");
                assert_eq!(err.lines().count(), 1, "case {i}: {err}");
                let place = format!("error: {}:{line}: ", file.display());
                assert!(
                    err.starts_with(&place) && err.contains(says),
                    "case {i}: {err}"
                );
                assert_eq!(setup.rows(), 0, "case {i}");
            }
        }
    }
}

/// The peak memory (`VmHWM`, kB) of the process `pid` until it exits,
/// sampled: a high-water mark only rises, and the old import reached its
/// peak at the start (the whole file read) and held it while writing.
fn peak_kb(child: &mut std::process::Child) -> u64 {
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        let hwm = std::fs::read_to_string(&status).ok().and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
        peak = peak.max(hwm.unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    peak
}

/// A file of 200 MiB (records with 1 MiB of detail each) is imported in
/// far less memory than its size: the old import, which read the file
/// whole and kept every record, peaked above 400 MB on it.
#[cfg(target_os = "linux")]
#[test]
fn an_import_holds_far_less_than_its_file_in_memory() {
    const RECORDS: usize = 200;
    let setup = Setup::new();
    let path = setup.dir.path().join("large.jsonl");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for i in 0..RECORDS {
            let record = AuditRecord::builder("blob.stored")
                .detail("body", format!("{i}{}", "x".repeat(1 << 20)))
                .build();
            serde_json::to_writer(&mut out, &record).unwrap();
            out.write_all(b"\n").unwrap();
        }
    }
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 200 << 20, "{size}");
    assert_import_holds_less_than_half(&setup, &path, size, RECORDS);
    // The same records newest first: the import sorts them through
    // temporary files, in runs of bounded size.
    let text = std::fs::read_to_string(&path).unwrap();
    let reversed: Vec<&str> = text.lines().rev().collect();
    std::fs::write(&path, reversed.join("\n")).unwrap();
    let setup = Setup::new();
    assert_import_holds_less_than_half(&setup, &path, size, RECORDS);
    let ids = setup.ids_in_insertion_order();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "rows not written in id order"
    );
}

fn assert_import_holds_less_than_half(setup: &Setup, path: &Path, size: u64, records: usize) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fabric-audit"))
        .args(["import", "--database-url", &setup.url])
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let peak = peak_kb(&mut child) * 1024;
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), summary(records, 1, records, 0, 0));
    assert!(peak > 0, "VmHWM was read");
    assert!(
        peak < size / 2,
        "peak memory {} MB for a file of {} MB",
        peak >> 20,
        size >> 20
    );
}
