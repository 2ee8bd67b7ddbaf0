//! What the layer records: fields, typing, span context, filtering.

use fabric_audit::{audit, exclude_audit, AuditLayer, DetailValue};
use tracing::field::Empty;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::prelude::*;

use crate::support::{pipeline, Collect, Seen, User};

/// Runs `emit` under a fresh pipeline with a collecting sink; returns what
/// the sink got.
fn collect(emit: impl FnOnce()) -> Collect {
    let sink = Collect::default();
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("collect", sink.clone()));
    tracing::dispatcher::with_default(&dispatch, emit);
    let report = audit.shutdown_blocking();
    assert!(report.is_lossless(), "{report}");
    sink
}

#[test]
fn actor_comes_from_the_principal() {
    let alice = User::alice();
    let r = collect(|| audit!(action = "post.created", actor = &alice)).only();
    assert_eq!(r.action(), "post.created");
    assert_eq!(r.actor_id(), Some("u-alice"));
    assert_eq!(r.actor_type(), Some("user"));
    assert_eq!(r.actor_email(), Some("alice@example.com"));
    assert_eq!(r.actor_name(), None);
    assert_eq!(r.actor_flags().collect::<Vec<_>>(), ["admin", "billing,ro"]);
    assert_eq!(r.id().get_version_num(), 7);
}

#[test]
fn resource_and_request_fields_fill_their_columns() {
    let r = collect(|| {
        audit!(
            action = "post.deleted",
            resource_type = "post",
            resource_id = 42,
            request_id = "req-1",
            client_ip = %std::net::Ipv4Addr::LOCALHOST,
        )
    })
    .only();
    assert_eq!(r.resource_type(), Some("post"));
    assert_eq!(r.resource_id(), Some("42"));
    assert_eq!(r.request_id(), Some("req-1"));
    assert_eq!(r.client_ip(), Some("127.0.0.1"));
    assert_eq!(r.detail().len(), 0);
}

/// `chain`, `seq` and `hash` are set where a record is stored; an event
/// (or a span) cannot forge them: its fields of those names are detail.
#[test]
fn an_event_cannot_set_its_place_in_a_chain() {
    let r = collect(|| {
        let span = tracing::info_span!("request", chain = "forged-span", hash = "h");
        let _in = span.enter();
        audit!(
            action = "post.created",
            chain = "forged",
            seq = 7_u64,
            hash = "00"
        )
    })
    .only();
    assert_eq!((r.chain(), r.seq(), r.hash()), (None, None, None));
    assert_eq!(r.detail_value("chain"), Some(DetailValue::Str("forged")));
    assert_eq!(r.detail_value("seq"), Some(DetailValue::I64(7)));
    assert_eq!(r.detail_value("hash"), Some(DetailValue::Str("00")));
}

#[test]
fn detail_keeps_each_field_typed() {
    #[derive(Debug)]
    #[allow(dead_code)] // read through Debug
    struct Point {
        x: i32,
    }
    let r = collect(|| {
        let title = "Hello";
        audit!(
            action = "post.created",
            words = 120,
            negative = -5,
            big = u64::MAX,
            huge = i128::MAX,
            ratio = 0.25,
            draft = false,
            title,
            shown = %title,
            debugged = ?Point { x: 1 },
            "http.method" = "GET",
        )
    })
    .only();
    let want = [
        ("words", DetailValue::I64(120)),
        ("negative", DetailValue::I64(-5)),
        ("big", DetailValue::U64(u64::MAX)),
        (
            "huge",
            DetailValue::Str("170141183460469231731687303715884105727"),
        ),
        ("ratio", DetailValue::F64(0.25)),
        ("draft", DetailValue::Bool(false)),
        ("title", DetailValue::Str("Hello")),
        ("shown", DetailValue::Str("Hello")),
        ("debugged", DetailValue::Str("Point { x: 1 }")),
        ("http.method", DetailValue::Str("GET")),
    ];
    assert_eq!(r.detail().collect::<Vec<_>>(), want);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["detail"]["words"], 120);
    assert_eq!(json["detail"]["draft"], false);
}

#[test]
fn actor_and_request_come_from_enclosing_spans() {
    let r = collect(|| {
        let request = tracing::info_span!(
            "request",
            request_id = "req-9",
            client_ip = "10.0.0.1",
            user_agent = "curl/8"
        );
        let _r = request.enter();
        let auth = tracing::info_span!("auth", "actor.id" = "svc-1", "actor.type" = "service");
        let _a = auth.enter();
        audit!(action = "job.ran");
    })
    .only();
    assert_eq!(r.actor_id(), Some("svc-1"));
    assert_eq!(r.actor_type(), Some("service"));
    assert_eq!(r.request_id(), Some("req-9"));
    assert_eq!(r.client_ip(), Some("10.0.0.1"));
    assert_eq!(r.user_agent(), Some("curl/8"));
}

#[test]
fn values_recorded_on_a_span_after_creation_are_seen() {
    let records = collect(|| {
        let request = tracing::info_span!(
            "request",
            request_id = "req-late",
            "actor.id" = Empty,
            "actor.email" = Empty,
            "actor.flags" = Empty
        );
        let _r = request.enter();
        // A child span made before the actor is known.
        let handler = tracing::info_span!("handler");
        let _h = handler.enter();
        audit!(action = "anonymous.view");
        request.record("actor.id", "u-late");
        request.record("actor.email", "late@example.com");
        request.record("actor.flags", "admin,ops");
        audit!(action = "user.view");
    })
    .records();
    assert_eq!(records[0].actor_id(), None);
    assert_eq!(records[0].request_id(), Some("req-late"));
    assert_eq!(records[1].actor_id(), Some("u-late"));
    assert_eq!(records[1].actor_email(), Some("late@example.com"));
    assert_eq!(
        records[1].actor_flags().collect::<Vec<_>>(),
        ["admin", "ops"]
    );
}

#[test]
fn the_nearest_actor_wins_whole_and_the_event_beats_spans() {
    let alice = User::alice();
    let records = collect(|| {
        let outer = tracing::info_span!(
            "outer",
            "actor.id" = "svc",
            "actor.email" = "svc@example.com",
            request_id = "outer-req"
        );
        let _o = outer.enter();
        let inner = tracing::info_span!("inner", "actor.id" = "u-2");
        let _i = inner.enter();
        audit!(action = "from.span");
        audit!(action = "from.event", actor = &alice);
    })
    .records();
    // The inner actor has no email: the outer one's is not mixed in.
    assert_eq!(records[0].actor_id(), Some("u-2"));
    assert_eq!(records[0].actor_email(), None);
    assert_eq!(records[0].request_id(), Some("outer-req"));
    assert_eq!(records[1].actor_id(), Some("u-alice"));
    assert_eq!(records[1].actor_email(), Some("alice@example.com"));
}

#[test]
fn an_explicit_parent_is_honoured() {
    let r = collect(|| {
        let detached = tracing::info_span!(parent: None, "job", "actor.id" = "cron");
        let current = tracing::info_span!("request", "actor.id" = "u-1");
        let _c = current.enter();
        tracing::info!(target: "audit", parent: &detached, action = "job.ran");
    })
    .only();
    assert_eq!(r.actor_id(), Some("cron"));
}

#[test]
fn other_targets_are_ignored_by_the_layer_and_seen_by_other_layers() {
    let sink = Collect::default();
    let seen = Seen::default();
    let kept_out = Seen::default();
    let (layer, audit) = AuditLayer::builder()
        .sink("collect", sink.clone())
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(seen.clone())
        .with(kept_out.clone().with_filter(exclude_audit()))
        .with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: "auditor", action = "not.audit");
        tracing::info!(target: "audit::sub", action = "not.audit");
        tracing::info!(action = "not.audit");
        audit!(action = "is.audit");
    });
    audit.shutdown_blocking();
    assert_eq!(sink.only().action(), "is.audit");
    assert_eq!(
        seen.targets(),
        ["auditor", "audit::sub", module_path!(), "audit"]
    );
    assert_eq!(
        kept_out.targets(),
        ["auditor", "audit::sub", module_path!()]
    );
}

#[test]
fn exclude_audit_composes_with_a_level_filter() {
    let kept_out = Seen::default();
    let sink = Collect::default();
    let (layer, audit) = AuditLayer::builder()
        .sink("collect", sink.clone())
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(
            kept_out
                .clone()
                .with_filter(tracing::level_filters::LevelFilter::WARN.and(exclude_audit())),
        )
        .with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!("quiet");
        tracing::warn!(target: "app", "loud");
        audit!(action = "is.audit");
    });
    audit.shutdown_blocking();
    assert_eq!(kept_out.targets(), ["app"]);
    assert_eq!(sink.len(), 1);
}

#[test]
fn an_event_without_an_action_is_counted_not_stored() {
    let sink = Collect::default();
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("collect", sink.clone()));
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!(target: "audit", resource_id = 1);
        tracing::info!(target: "audit", action = "");
        audit!(action = "ok");
    });
    let report = audit.shutdown_blocking();
    assert_eq!(report.invalid(), 2);
    assert_eq!(report.emitted(), 1);
    assert_eq!(sink.only().action(), "ok");
}

#[test]
fn emits_from_plain_threads_with_no_runtime() {
    let sink = Collect::default();
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("collect", sink.clone()));
    assert!(tokio::runtime::Handle::try_current().is_err());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let dispatch = dispatch.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for i in 0..250 {
                        audit!(action = "thread.tick", thread = t, i = i);
                    }
                })
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    audit.flush_blocking().unwrap();
    assert_eq!(sink.len(), 1000);
    assert_eq!(audit.shutdown_blocking().emitted(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emits_from_async_tasks_and_flushes_without_blocking() {
    let sink = Collect::default();
    let (dispatch, audit) = pipeline(AuditLayer::builder().sink("collect", sink.clone()));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let dispatch = dispatch.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    tracing::dispatcher::with_default(&dispatch, || {
                        audit!(action = "task.tick", task = t, i = i)
                    });
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    audit.flush().await.unwrap();
    assert_eq!(sink.len(), 800);
    let report = audit.shutdown().await;
    assert_eq!(report.sink("collect").unwrap().written(), 800);
}

#[test]
fn debug_and_trace_are_never_audit_data_even_when_another_layer_wants_them() {
    let sink = Collect::default();
    let everything = Seen::default();
    let (layer, audit) = AuditLayer::builder()
        .sink("collect", sink.clone())
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(
            everything
                .clone()
                .with_filter(tracing::level_filters::LevelFilter::TRACE),
        )
        .with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::debug!(target: "audit", action = "debug.event");
        tracing::trace!(target: "audit", action = "trace.event");
        let debug_span = tracing::debug_span!("auth", "actor.id" = "from-debug-span");
        let _d = debug_span.enter();
        audit!(action = "info.event");
        tracing::warn!(target: "audit", action = "warn.event");
    });
    audit.shutdown_blocking();
    let records = sink.records();
    let actions: Vec<&str> = records.iter().map(|r| r.action()).collect();
    assert_eq!(actions, ["info.event", "warn.event"]);
    assert!(
        records.iter().all(|r| r.actor_id().is_none()),
        "{records:?}"
    );
    // The other layer did see everything: the filter only keeps it out of ours.
    assert_eq!(everything.targets().len(), 4);
}

#[test]
fn an_empty_value_recorded_on_a_span_clears_the_field() {
    let r = collect(|| {
        let span = tracing::info_span!(
            "request",
            "actor.id" = Empty,
            "actor.email" = Empty,
            "actor.name" = Empty,
            "actor.flags" = Empty,
            user_agent = Empty,
        );
        span.record("actor.id", "u-admin");
        span.record("actor.email", "admin@example.com");
        span.record("actor.name", "Admin");
        span.record("actor.flags", r#"["admin"]"#);
        span.record("user_agent", "first/1.0");
        // A second actor, without email, name or flags, replaces the first.
        span.record("actor.id", "u-guest");
        span.record("actor.email", "");
        span.record("actor.name", "");
        span.record("actor.flags", "[]");
        span.record("user_agent", "");
        let _e = span.enter();
        audit!(action = "as.guest");
    })
    .only();
    assert_eq!(r.actor_id(), Some("u-guest"));
    assert_eq!(r.actor_email(), None);
    assert_eq!(r.actor_name(), None);
    assert_eq!(r.actor_flags().len(), 0);
    assert_eq!(r.user_agent(), None);
}

#[test]
fn a_huge_value_is_cut_to_the_record_budget_and_says_so() {
    let sink = Collect::default();
    let (dispatch, audit) = pipeline(
        AuditLayer::builder()
            .sink("collect", sink.clone())
            .max_record_bytes(8 * 1024),
    );
    // 400 KB of two-byte characters: every cut must fall between them.
    let huge = "é".repeat(200_000);
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!(
            "request",
            user_agent = huge.as_str(),
            request_id = "req-after-the-huge-one"
        );
        let _e = span.enter();
        audit!(
            action = "upload",
            body = huge.as_str(),
            note = "small",
            resource_id = "r-1"
        );
    });
    let report = audit.shutdown_blocking();
    assert!(report.is_lossless(), "{report}");
    let r = sink.only();
    let body = match r.detail_value("body") {
        Some(DetailValue::Str(s)) => s,
        other => panic!("{other:?}"),
    };
    assert!(
        body.len() <= 8 * 1024 && body.len() > 7 * 1024,
        "{}",
        body.len()
    );
    assert!(body.chars().all(|c| c == 'é'));
    // Values after the budget is spent keep their first 256 bytes.
    assert_eq!(r.detail_value("note"), Some(DetailValue::Str("small")));
    assert_eq!(r.resource_id(), Some("r-1"));
    assert_eq!(r.request_id(), Some("req-after-the-huge-one"));
    assert_eq!(r.user_agent().unwrap().len(), 256);
    assert_eq!(
        r.detail_value("fabric_audit.truncated.detail.body"),
        Some(DetailValue::I64(400_000))
    );
    assert_eq!(
        r.detail_value("fabric_audit.truncated.user_agent"),
        Some(DetailValue::I64(400_000))
    );
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.len() < 8 * 1024 + 4 * 1024, "{}", json.len());
}

#[test]
fn the_default_budget_bounds_hostile_values() {
    let megabyte: String = (0..1_048_576u32)
        .map(|i| char::from_u32(i % 32).unwrap())
        .collect();
    let r = collect(|| {
        audit!(
            action = "hostile",
            resource_id = megabyte.as_str(),
            "actor.id" = megabyte.as_str(),
            blob = ?megabyte.len(),
            text = %megabyte,
        )
    })
    .only();
    let json = serde_json::to_string(&r).unwrap();
    // 32 KiB of text, escaped (control characters take six bytes each).
    assert!(json.len() < 6 * 40 * 1024, "{}", json.len());
    assert!(r.resource_id().unwrap().len() <= 32 * 1024);
    assert_eq!(
        r.detail_value("fabric_audit.truncated.resource_id"),
        Some(DetailValue::I64(1_048_576))
    );
    assert_eq!(
        r.detail_value("fabric_audit.truncated.actor_id"),
        Some(DetailValue::I64(1_048_576))
    );
    assert_eq!(r.detail_value("blob"), Some(DetailValue::Str("1048576")));
}

#[test]
fn a_budget_below_one_kilobyte_is_refused() {
    let err = AuditLayer::builder()
        .sink("collect", Collect::default())
        .max_record_bytes(100)
        .build::<tracing_subscriber::Registry>()
        .unwrap_err();
    assert!(err.to_string().contains("max_record_bytes"), "{err}");
}

#[test]
fn display_values_need_no_percent_and_typed_values_keep_their_type() {
    let id = uuid::Uuid::now_v7();
    let ip = std::net::IpAddr::from([192, 0, 2, 7]);
    let r = collect(|| {
        audit!(
            action = "typed",
            resource_id = id,
            "actor.id" = uuid::Uuid::nil(),
            client_ip = ip,
            addr = std::net::SocketAddr::from(([127, 0, 0, 1], 80)),
            owned = format!("made-{}", 1),
            n = 7u8,
            ok = true,
            name = "literal",
        )
    })
    .only();
    assert_eq!(r.resource_id(), Some(id.to_string().as_str()));
    assert_eq!(r.actor_id(), Some("00000000-0000-0000-0000-000000000000"));
    assert_eq!(r.client_ip(), Some("192.0.2.7"));
    assert_eq!(
        r.detail_value("addr"),
        Some(DetailValue::Str("127.0.0.1:80"))
    );
    assert_eq!(r.detail_value("owned"), Some(DetailValue::Str("made-1")));
    assert_eq!(r.detail_value("n"), Some(DetailValue::I64(7)));
    assert_eq!(r.detail_value("ok"), Some(DetailValue::Bool(true)));
    assert_eq!(r.detail_value("name"), Some(DetailValue::Str("literal")));
}

#[test]
fn check_passes_in_a_good_subscriber_and_explains_a_bad_one() {
    use tracing_subscriber::EnvFilter;
    // A macro, not a closure: each subscriber below types its layer anew.
    macro_rules! build {
        () => {
            AuditLayer::builder()
                .sink("collect", Collect::default())
                .build()
                .unwrap()
        };
    }
    // The recommended set-up: the EnvFilter on the fmt layer only.
    let (layer, audit) = build!();
    let good = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(EnvFilter::new("warn").and(exclude_audit())),
        )
        .with(layer);
    tracing::subscriber::with_default(good, || audit.check().unwrap());
    // The probe is not a record.
    assert_eq!(audit.shutdown_blocking().emitted(), 0);

    // A global filter that disables target `audit`.
    let (layer, audit) = build!();
    let global = tracing_subscriber::registry()
        .with(EnvFilter::new("warn"))
        .with(layer);
    let err = tracing::subscriber::with_default(global, || audit.check().unwrap_err());
    let text = err.to_string();
    assert!(text.contains("do not reach this AuditLayer"), "{text}");
    assert!(text.contains("audit=info"), "{text}");

    // Events pass, spans of target `audit` do not: records would lack context.
    let (layer, audit) = build!();
    let no_spans = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::filter_fn(|m| {
            m.is_event() || m.target() != "audit"
        }))
        .with(layer);
    let err = tracing::subscriber::with_default(no_spans, || audit.check().unwrap_err());
    assert!(err.to_string().contains("request span"), "{err}");

    // A subscriber without this pipeline's layer (another pipeline's is there).
    let (other_layer, audit) = build!();
    drop::<tracing_subscriber::filter::Filtered<_, _, tracing_subscriber::Registry>>(other_layer);
    let (layer, _other) = build!();
    let elsewhere = tracing_subscriber::registry().with(layer);
    let err = tracing::subscriber::with_default(elsewhere, || audit.check().unwrap_err());
    assert!(err.to_string().contains("not installed"), "{err}");
}

#[test]
fn a_principal_can_hand_out_an_id_it_does_not_store_as_text() {
    struct Member(uuid::Uuid);
    impl fabric_audit::Principal for Member {
        fn id(&self) -> std::borrow::Cow<'_, str> {
            self.0.to_string().into()
        }
    }
    let member = Member(uuid::Uuid::from_u128(0xfeed));
    let r = collect(|| audit!(action = "member.seen", actor = &member)).only();
    assert_eq!(r.actor_id(), Some("00000000-0000-0000-0000-00000000feed"));
}
