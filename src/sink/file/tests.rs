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
