use std::sync::Mutex;

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::AuditRecord;

fn names() -> FileNames {
    FileNames::from_path(Path::new("logs/audit.jsonl")).unwrap()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

#[test]
fn names_split_the_path() {
    let cases = [
        ("logs/audit.jsonl", "logs", "audit", Some("jsonl")),
        ("audit.jsonl", ".", "audit", Some("jsonl")),
        ("a/b.c.log", "a", "b.c", Some("log")),
        ("logs/audit", "logs", "audit", None),
        ("logs/.hidden", "logs", ".hidden", None),
    ];
    for (path, dir, prefix, suffix) in cases {
        let n = FileNames::from_path(Path::new(path)).unwrap();
        assert_eq!(n.dir, PathBuf::from(dir), "{path}");
        assert_eq!(n.prefix, prefix, "{path}");
        assert_eq!(n.suffix.as_deref(), suffix, "{path}");
    }
    assert_eq!(FileNames::from_path(Path::new("/")), None);
}

#[test]
fn only_names_of_exactly_our_pattern_parse() {
    let n = names();
    let cases = [
        ("audit.2026-11-27.jsonl", Some(date(2026, 11, 27))),
        ("audit.2026-1-5.jsonl", None),
        ("audit.2026-11-27.jsonl.gz", None),
        ("audit.2026-11-27.json", None),
        ("audit-old.2026-11-27.jsonl", None),
        ("xaudit.2026-11-27.jsonl", None),
        ("audit.2026-02-30.jsonl", None),
        ("audit..jsonl", None),
        ("audit.jsonl", None),
    ];
    for (name, want) in cases {
        assert_eq!(n.parse(name), want, "{name}");
    }
}

proptest! {
    #[test]
    fn every_written_name_parses_back(days in 0i64..3_000_000, prefix in "[a-z][a-z.]{0,8}") {
        let day = NaiveDate::from_num_days_from_ce_opt(days as i32).unwrap();
        let n = FileNames::from_path(Path::new(&format!("d/{prefix}.jsonl"))).unwrap();
        prop_assume!(day.year_ce().1 <= 9999);
        prop_assert_eq!(n.parse(&n.name(day)), Some(day));
    }
}

use chrono::Datelike;

/// A clock the test moves by hand.
#[derive(Clone)]
struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    fn at(y: i32, m: u32, d: u32, h: u32) -> Self {
        Self(Arc::new(Mutex::new(
            Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap(),
        )))
    }
    fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().unwrap() = to;
    }
    fn advance_hours(&self, hours: i64) {
        let now = *self.0.lock().unwrap();
        self.set(now + chrono::Duration::hours(hours));
    }
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

fn sink(dir: &Path, clock: &TestClock, retention: u32) -> FileSink {
    let c = clock.clone();
    FileSink::builder(dir.join("audit.jsonl"))
        .retention_days(retention)
        .clock(move || c.now())
        .build()
        .unwrap()
}

fn write(sink: &mut FileSink, actions: &[&str]) {
    let records: Vec<_> = actions
        .iter()
        .map(|a| Arc::new(AuditRecord::builder(a).build()))
        .collect();
    sink.write(&Batch::new(&records)).unwrap();
}

fn actions_in(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<AuditRecord>(l)
                .unwrap()
                .action()
                .to_owned()
        })
        .collect()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn rotates_at_utc_midnight() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::at(2026, 3, 1, 22);
    let mut sink = sink(dir.path(), &clock, 90);
    write(&mut sink, &["a.one", "a.two"]);
    clock.advance_hours(1); // 23:00, same day
    write(&mut sink, &["a.three"]);
    clock.advance_hours(1); // 00:00 the next day
    write(&mut sink, &["b.one"]);

    let day1 = dir.path().join("audit.2026-03-01.jsonl");
    let day2 = dir.path().join("audit.2026-03-02.jsonl");
    assert_eq!(actions_in(&day1), ["a.one", "a.two", "a.three"]);
    assert_eq!(actions_in(&day2), ["b.one"]);
}

#[test]
fn prunes_expired_files_of_its_own_pattern_only() {
    let dir = tempfile::tempdir().unwrap();
    let strangers = [
        "audit.2020-01-01.jsonl.bak",
        "audit-old.2020-01-01.jsonl",
        "audit.2020-1-1.jsonl",
        "notes.txt",
    ];
    for name in strangers {
        fs::write(dir.path().join(name), "keep me\n").unwrap();
    }
    let clock = TestClock::at(2026, 3, 1, 12);
    let mut sink = sink(dir.path(), &clock, 2);
    for _ in 0..4 {
        write(&mut sink, &["x"]);
        clock.advance_hours(24);
    }
    // Day 4 (03-04) keeps itself and the two days before it.
    let mut want: Vec<String> = strangers.iter().map(|s| s.to_string()).collect();
    want.extend(
        [
            "audit.2026-03-02.jsonl",
            "audit.2026-03-03.jsonl",
            "audit.2026-03-04.jsonl",
        ]
        .map(String::from),
    );
    want.sort();
    assert_eq!(listing(dir.path()), want);
}

#[test]
fn prunes_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    for day in ["2026-01-01", "2026-02-27", "2026-02-28"] {
        fs::write(dir.path().join(format!("audit.{day}.jsonl")), "").unwrap();
    }
    let clock = TestClock::at(2026, 3, 1, 0);
    let _sink = sink(dir.path(), &clock, 1);
    assert_eq!(
        listing(dir.path()),
        ["audit.2026-02-28.jsonl", "audit.2026-03-01.jsonl"]
    );
}

#[test]
fn keep_forever_prunes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("audit.2000-01-01.jsonl"), "").unwrap();
    let c = TestClock::at(2026, 3, 1, 0);
    let _sink = FileSink::builder(dir.path().join("audit.jsonl"))
        .keep_forever()
        .clock(move || c.now())
        .build()
        .unwrap();
    assert_eq!(listing(dir.path()).len(), 2);
}

#[test]
fn a_line_torn_by_an_earlier_crash_is_cut_and_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.2026-03-01.jsonl");
    let whole = serde_json::to_string(&AuditRecord::builder("before.crash").build()).unwrap();
    fs::write(&path, format!("{whole}\n{{\"id\":\"torn")).unwrap();
    let clock = TestClock::at(2026, 3, 1, 0);
    let mut sink = sink(dir.path(), &clock, 90);
    write(&mut sink, &["after.crash"]);
    // Every line of the file is a record again.
    assert_eq!(actions_in(&path), ["before.crash", "after.crash"]);
    let aside = fs::read_to_string(dir.path().join("audit.2026-03-01.jsonl.torn")).unwrap();
    assert_eq!(aside, "{\"id\":\"torn\n");
}

#[test]
fn a_file_that_is_one_torn_line_is_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.2026-03-01.jsonl");
    // Longer than one block of the backwards scan, with no newline at all.
    fs::write(&path, "x".repeat(200_000)).unwrap();
    let clock = TestClock::at(2026, 3, 1, 0);
    let mut sink = sink(dir.path(), &clock, 90);
    write(&mut sink, &["fresh"]);
    assert_eq!(actions_in(&path), ["fresh"]);
}

#[test]
fn a_failed_undo_before_midnight_is_repaired_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::at(2026, 3, 1, 23);
    let mut sink = sink(dir.path(), &clock, 90);
    write(&mut sink, &["good"]);
    let day1 = dir.path().join("audit.2026-03-01.jsonl");
    let good_len = fs::metadata(&day1).unwrap().len();
    // As after a write that failed half-way and whose undo failed too.
    let mut file = OpenOptions::new().append(true).open(&day1).unwrap();
    file.write_all(b"{\"id\":\"half a rec").unwrap();
    sink.current = None;
    sink.repair = Some((date(2026, 3, 1), good_len));
    clock.advance_hours(2); // the retry happens on the next day
    write(&mut sink, &["next.day"]);
    assert_eq!(actions_in(&day1), ["good"]);
    assert_eq!(
        actions_in(&dir.path().join("audit.2026-03-02.jsonl")),
        ["next.day"]
    );
    assert!(sink.repair.is_none());
}

#[test]
fn a_clock_jumping_forward_deletes_no_fresh_file() {
    let dir = tempfile::tempdir().unwrap();
    for day in ["2026-02-27", "2026-02-28", "2026-03-01"] {
        fs::write(dir.path().join(format!("audit.{day}.jsonl")), "").unwrap();
    }
    // A year ahead, with seven days kept: the last days before the jump stay.
    let clock = TestClock::at(2027, 3, 1, 0);
    let _sink = sink(dir.path(), &clock, 7);
    assert_eq!(
        listing(dir.path()),
        [
            "audit.2026-02-27.jsonl",
            "audit.2026-02-28.jsonl",
            "audit.2026-03-01.jsonl",
            "audit.2027-03-01.jsonl"
        ]
    );
}

#[test]
fn zero_or_absurd_retention_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for days in [0, Retention::MAX_DAYS + 1, u32::MAX] {
        let err = FileSink::builder(dir.path().join("audit.jsonl"))
            .retention_days(days)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("log_retention_days"), "{err}");
    }
    assert_eq!(listing(dir.path()).len(), 0, "nothing opened");
    FileSink::builder(dir.path().join("audit.jsonl"))
        .retention(Retention::days(Retention::MAX_DAYS).unwrap())
        .build()
        .unwrap();
}

#[test]
fn a_write_error_is_reported_and_writing_resumes_when_it_clears() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::at(2026, 3, 1, 0);
    let mut sink = sink(dir.path(), &clock, 90);
    write(&mut sink, &["before"]);

    // Tomorrow's file is a link to /dev/full: every write fails with ENOSPC.
    let tomorrow = dir.path().join("audit.2026-03-02.jsonl");
    std::os::unix::fs::symlink("/dev/full", &tomorrow).unwrap();
    clock.advance_hours(24);
    let records = [Arc::new(AuditRecord::builder("during").build())];
    let err = sink.write(&Batch::new(&records)).unwrap_err();
    assert!(err.is_transient());
    assert!(err.to_string().contains("No space left"), "{err}");

    fs::remove_file(&tomorrow).unwrap();
    sink.write(&Batch::new(&records)).unwrap();
    assert_eq!(actions_in(&tomorrow), ["during"]);
    assert_eq!(
        actions_in(&dir.path().join("audit.2026-03-01.jsonl")),
        ["before"]
    );
}

#[test]
fn a_directory_that_cannot_be_created_fails_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("logs");
    fs::write(&blocker, "a file where the directory should be").unwrap();
    let err = FileSink::builder(blocker.join("audit.jsonl"))
        .build()
        .unwrap_err();
    assert!(
        err.to_string().starts_with("cannot open audit file"),
        "{err}"
    );
}

mod purges {
    use super::*;
    use crate::chain::checkpoint::SigningKey;
    use crate::chain::{Break, Chain, Linker};
    use crate::verify::{verify_files, verify_files_with, Verifier};

    /// Writes `n` records of the sink's chain, linked as its worker does.
    fn write_chained(sink: &mut FileSink, linker: &mut Linker, n: usize) {
        let records: Vec<_> = (0..n)
            .map(|i| {
                let mut record = AuditRecord::builder("invoice.sent").detail("n", i).build();
                linker.link(&mut record);
                Arc::new(record)
            })
            .collect();
        sink.write(&Batch::new(&records)).unwrap();
    }

    /// Three days of five records each, with one day of retention: the
    /// third day's first write deletes the first day's file.
    fn three_days(dir: &Path, key: Option<SigningKey>) -> TestClock {
        let clock = TestClock::at(2026, 3, 1, 12);
        let c = clock.clone();
        let mut builder = FileSink::builder(dir.join("audit.jsonl"))
            .retention_days(1)
            .clock(move || c.now());
        if let Some(key) = key {
            builder = builder.purge_key(key);
        }
        let mut sink = builder.build().unwrap();
        let mut linker = Linker::new(Chain::new("api-1/file"));
        for _ in 0..3 {
            write_chained(&mut sink, &mut linker, 5);
            clock.advance_hours(24);
        }
        clock
    }

    #[test]
    fn files_deleted_by_retention_leave_a_chain_that_verifies_from_the_statement() {
        let dir = tempfile::tempdir().unwrap();
        three_days(dir.path(), None);
        assert_eq!(
            listing(dir.path()),
            [
                "audit.2026-03-02.jsonl",
                "audit.2026-03-03.jsonl",
                "audit.purges"
            ]
        );
        let statements = fs::read_to_string(dir.path().join("audit.purges")).unwrap();
        assert_eq!(statements.lines().count(), 1, "{statements}");
        let (statement, note) =
            PurgeStatement::from_json_line(statements.trim_end().as_bytes()).unwrap();
        assert_eq!(
            (
                statement.chain.as_str(),
                statement.below_seq,
                statement.records,
                note
            ),
            ("api-1/file", 6, 5, None)
        );
        assert_eq!(statement.cutoff.to_rfc3339(), "2026-03-02T00:00:00+00:00");

        let v = verify_files(dir.path()).unwrap();
        assert!(v.is_intact(), "{v:?}");
        assert_eq!(v.chained(), 10);
        assert_eq!(v.chains[0].purged_below, Some(6), "{v:?}");
        assert_eq!(v.chains[0].first_seq, Some(6), "{v:?}");
        // One day's file read alone finds its statement beside it too.
        let v = verify_files(dir.path().join("audit.2026-03-02.jsonl")).unwrap();
        assert!(v.is_intact(), "{v:?}");

        // The same deletion done by hand, without a statement, is caught.
        fs::remove_file(dir.path().join("audit.2026-03-02.jsonl")).unwrap();
        let v = verify_files(dir.path()).unwrap();
        assert!(!v.is_intact(), "{v:?}");
        assert_eq!(v.chains[0].breaks, [Break::Deleted { from: 6, to: 10 }]);
    }

    #[test]
    fn each_purge_states_the_records_it_deleted_from_the_files_ends() {
        let dir = tempfile::tempdir().unwrap();
        let clock = three_days(dir.path(), None);
        // A fourth day: its first write deletes the second day's file.
        let mut sink = sink(dir.path(), &clock, 1);
        let mut linker = Linker::new(Chain::resume("api-1/file", 15, {
            let last = fs::read_to_string(dir.path().join("audit.2026-03-03.jsonl")).unwrap();
            let last: AuditRecord = serde_json::from_str(last.lines().last().unwrap()).unwrap();
            crate::chain::from_hex(last.hash().unwrap()).unwrap()
        }));
        write_chained(&mut sink, &mut linker, 2);
        let statements = fs::read_to_string(dir.path().join("audit.purges")).unwrap();
        let read: Vec<(u64, u64)> = statements
            .lines()
            .map(|l| PurgeStatement::from_json_line(l.as_bytes()).unwrap().0)
            .map(|s| (s.below_seq, s.records))
            .collect();
        assert_eq!(read, [(6, 5), (11, 5)]);
        let v = verify_files(dir.path()).unwrap();
        assert!(v.is_intact(), "{v:?}");
        assert_eq!(v.chains[0].purged_below, Some(11), "{v:?}");
        assert_eq!(v.chained(), 7);
    }

    #[test]
    fn a_chain_that_begins_past_the_first_mebibyte_of_its_file_is_counted_too() {
        let dir = tempfile::tempdir().unwrap();
        let clock = TestClock::at(2026, 3, 1, 12);
        let mut sink = sink(dir.path(), &clock, 1);
        // An instance renamed that day: 1.2 MB of its old chain first.
        let mut old = Linker::new(Chain::new("api-0/file"));
        let big: Vec<_> = (0..3)
            .map(|_| {
                let mut record = AuditRecord::builder("invoice.sent")
                    .detail("notes", "x".repeat(400_000))
                    .build();
                old.link(&mut record);
                Arc::new(record)
            })
            .collect();
        sink.write(&Batch::new(&big)).unwrap();
        let mut linker = Linker::new(Chain::new("api-1/file"));
        for _ in 0..3 {
            write_chained(&mut sink, &mut linker, 3);
            clock.advance_hours(24);
        }
        let statements = fs::read_to_string(dir.path().join("audit.purges")).unwrap();
        let (statement, _) =
            PurgeStatement::from_json_line(statements.trim_end().as_bytes()).unwrap();
        assert_eq!(
            (
                statement.chain.as_str(),
                statement.below_seq,
                statement.records
            ),
            ("api-1/file", 4, 3)
        );
    }

    #[test]
    fn a_forged_or_unsigned_statement_explains_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate("audit.example").unwrap();
        let public = key.public_key();
        three_days(
            dir.path(),
            Some(SigningKey::parse(&key.to_secret_text()).unwrap()),
        );
        let purges = dir.path().join("audit.purges");
        let signed = fs::read_to_string(&purges).unwrap();
        let v = verify_files_with(Verifier::new().keys([public.clone()]), dir.path()).unwrap();
        assert!(v.is_intact() && v.unreadable.is_empty(), "{v:?}");
        assert_eq!(v.chains[0].purged_below, Some(6), "{v:?}");

        // Signed by a key the auditor does not hold.
        let other = SigningKey::generate("audit.example").unwrap().public_key();
        let v = verify_files_with(Verifier::new().keys([other]), dir.path()).unwrap();
        assert!(!v.is_intact(), "{v:?}");
        assert_eq!(v.unreadable.len(), 1, "{v:?}");
        assert_eq!(v.chains[0].breaks, [Break::Deleted { from: 1, to: 5 }]);

        // Unsigned (the note removed), with keys given.
        let (statement, _) = PurgeStatement::from_json_line(signed.trim_end().as_bytes()).unwrap();
        let mut line = statement.to_json_line(None);
        line.push(b'\n');
        fs::write(&purges, &line).unwrap();
        let v = verify_files_with(Verifier::new().keys([public]), dir.path()).unwrap();
        assert!(!v.is_intact(), "{v:?}");
        assert!(v.unreadable[0].error.contains("not signed"), "{v:?}");

        // Another head, without keys: the first record kept does not
        // follow it, so the prefix stays deleted and the record is named.
        let mut forged = statement.clone();
        forged.head = [7; 32];
        let mut line = forged.to_json_line(None);
        line.push(b'\n');
        fs::write(&purges, &line).unwrap();
        let v = verify_files(dir.path()).unwrap();
        assert!(!v.is_intact(), "{v:?}");
        assert_eq!(
            v.chains[0].breaks,
            [
                Break::Modified { seq: 6 },
                Break::Deleted { from: 1, to: 5 }
            ]
        );

        // A line that is no statement is named, not skipped.
        fs::write(&purges, "{\"chain\":1}\n").unwrap();
        let v = verify_files(dir.path()).unwrap();
        assert_eq!(v.unreadable.len(), 1, "{v:?}");
        assert!(v.unreadable[0].place.ends_with("audit.purges:1"), "{v:?}");
    }

    #[test]
    fn nothing_is_deleted_while_the_statement_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the statements file should be.
        fs::create_dir(dir.path().join("audit.purges")).unwrap();
        three_days(dir.path(), None);
        assert_eq!(
            listing(dir.path()),
            [
                "audit.2026-03-01.jsonl",
                "audit.2026-03-02.jsonl",
                "audit.2026-03-03.jsonl",
                "audit.purges"
            ]
        );
        let v = verify_files(dir.path().join("audit.2026-03-01.jsonl")).unwrap();
        assert!(v.is_intact(), "{v:?}");
    }
}
