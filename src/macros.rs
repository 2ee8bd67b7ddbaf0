//! The `audit!` macro: an ordinary `tracing` event with target `"audit"`.

/// Emits an audit event: a `tracing` event with target `"audit"` and level
/// `INFO`, which [`AuditLayer`](crate::AuditLayer) turns into an
/// [`AuditRecord`](crate::AuditRecord).
///
/// `action = ".."` is required; leaving it out is a compile error. The
/// other fields, in any order:
///
/// | field | becomes |
/// |---|---|
/// | `actor = &principal` | `actor_id`, `actor_type`, `actor_email`, `actor_name`, `actor_flags`, from any [`Principal`](crate::Principal) |
/// | `resource_type = ..`, `resource_id = ..` | the resource; any value, recorded as text |
/// | `request_id`, `client_ip`, `user_agent` | the request context (usually inherited from a span) |
/// | `key = value` | `detail.key`, keeping its type: integers, floats, booleans, strings |
/// | `key = %value`, `key = ?value` | `detail.key` as a string, through `Display` or `Debug` |
/// | `key`, `%key`, `?key` | shorthand for `key = key`, … |
///
/// Fields not given fall back to the enclosing spans: the actor from the
/// nearest span that records `actor.id`, the request context from the
/// nearest span that records each of its fields. See
/// [`AuditLayer`](crate::AuditLayer).
///
/// Emitting never blocks on I/O and never fails: without a subscriber, or
/// without an `AuditLayer` in it, the event costs about as much as any
/// disabled `tracing` event. The field expressions are evaluated only when
/// the event is enabled, except `actor = ..`, which is evaluated once in any
/// case: pass a reference. The event is also seen by your other layers; keep
/// it out of those with [`exclude_audit`](crate::exclude_audit).
///
/// # Examples
///
/// ```
/// use fabric_audit::{audit, Principal};
///
/// struct User(String);
/// impl Principal for User {
///     fn id(&self) -> std::borrow::Cow<'_, str> { self.0.as_str().into() }
///     fn kind(&self) -> Option<&str> { Some("user") }
/// }
///
/// let user = User("u-1".into());
/// let post_id = 42;
/// let title = "Hello";
/// audit!(
///     action = "post.created",
///     actor = &user,
///     resource_type = "post",
///     resource_id = post_id,
///     title = %title,
///     words = 120,
///     draft = false,
/// );
/// ```
///
/// Without an action it does not compile:
///
/// ```compile_fail
/// fabric_audit::audit!(resource_type = "post", resource_id = 1);
/// ```
#[macro_export]
macro_rules! audit {
    ($($input:tt)*) => {
        $crate::__audit_munch!(@ [] [] [] $($input)* ,)
    };
}

/// Sorts `audit!`'s fields into the action, the actor and the rest, one
/// field per step, then emits the event. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __audit_munch {
    // Done: exactly one action.
    (@ [$action:expr] [$($actor:expr)?] [$($fields:tt)*] $(,)*) => {
        $crate::__audit_emit!([$action] [$($actor)?] [$($fields)*])
    };
    (@ [] [$($actor:tt)*] [$($fields:tt)*] $(,)*) => {
        ::core::compile_error!("audit! needs an action: audit!(action = \"post.created\", ..)")
    };
    (@ [$($action:tt)*] [$($actor:tt)*] [$($fields:tt)*] $(,)*) => {
        ::core::compile_error!("audit! takes one action and at most one actor")
    };
    // Stray commas.
    (@ $a:tt $p:tt $f:tt , $($rest:tt)*) => {
        $crate::__audit_munch!(@ $a $p $f $($rest)*)
    };
    // The reserved fields.
    (@ [$($action:tt)*] $p:tt $f:tt action = $v:expr, $($rest:tt)*) => {
        $crate::__audit_munch!(@ [$($action)* $v] $p $f $($rest)*)
    };
    (@ $a:tt [$($actor:tt)*] $f:tt actor = $v:expr, $($rest:tt)*) => {
        $crate::__audit_munch!(@ $a [$($actor)* $v] $f $($rest)*)
    };
    // `key = %v`, `key = ?v`, `key = v`, with identifier or literal keys.
    (@ $a:tt $p:tt [$($f:tt)*] $($k:ident).+ = % $v:expr, $($rest:tt)*) => {
        $crate::__audit_munch!(@ $a $p [$($f)* $($k).+ = % $v,] $($rest)*)
    };
    (@ $a:tt $p:tt [$($f:tt)*] $($k:ident).+ = ? $v:expr, $($rest:tt)*) => {
        $crate::__audit_munch!(@ $a $p [$($f)* $($k).+ = ? $v,] $($rest)*)
    };
    (@ $a:tt $p:tt [$($f:tt)*] $($k:ident).+ = $v:expr, $($rest:tt)*) => {
        $crate::__audit_munch!(@ $a $p [$($f)* $($k).+ = (&&$crate::__private::Auto(&$v)).__fa_value(),] $($rest)*)
    };
    (@ $a:tt $p:tt [$($f:tt)*] $k:literal = % $v:expr, $($rest:tt)*) => {
        $crate::__audit_munch!(@ $a $p [$($f)* $k = % $v,] $($rest)*)
    };
    (@ $a:tt $p:tt [$($f:tt)*] $k:literal = ? $v:expr, $($rest:tt)*) => {
        $crate::__audit_munch!(@ $a $p [$($f)* $k = ? $v,] $($rest)*)
    };
    (@ $a:tt $p:tt [$($f:tt)*] $k:literal = $v:expr, $($rest:tt)*) => {
        $crate::__audit_munch!(@ $a $p [$($f)* $k = (&&$crate::__private::Auto(&$v)).__fa_value(),] $($rest)*)
    };
    // Shorthand: `key`, `%key`, `?key`.
    (@ $a:tt $p:tt [$($f:tt)*] % $($k:ident).+, $($rest:tt)*) => {
        $crate::__audit_munch!(@ $a $p [$($f)* % $($k).+,] $($rest)*)
    };
    (@ $a:tt $p:tt [$($f:tt)*] ? $($k:ident).+, $($rest:tt)*) => {
        $crate::__audit_munch!(@ $a $p [$($f)* ? $($k).+,] $($rest)*)
    };
    (@ $a:tt $p:tt [$($f:tt)*] $($k:ident).+, $($rest:tt)*) => {
        $crate::__audit_munch!(@ $a $p [$($f)* $($k).+,] $($rest)*)
    };
}

/// Expands to the `tracing` event, and notices when no audit layer saw it
/// (see `__private::Seen`). Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __audit_emit {
    ([$action:expr] [] [$($fields:tt)*]) => {{
        #[allow(unused_imports)]
        use $crate::__private::{AutoDisplay as _, AutoValue as _};
        let __seen = $crate::__private::Seen::before();
        $crate::__private::tracing::event!(
            name: "audit",
            target: "audit",
            $crate::__private::tracing::Level::INFO,
            { "action" = $action, $($fields)* }
        );
        __seen.after(::core::file!(), ::core::line!());
    }};
    ([$action:expr] [$actor:expr] [$($fields:tt)*]) => {{
        #[allow(unused_imports)]
        use $crate::__private::{AutoDisplay as _, AutoValue as _};
        let actor = &$actor;
        let __seen = $crate::__private::Seen::before();
        $crate::__private::tracing::event!(
            name: "audit",
            target: "audit",
            $crate::__private::tracing::Level::INFO,
            {
                "action" = $action,
                "actor.id" = &*$crate::Principal::id(actor),
                "actor.type" = $crate::Principal::kind(actor),
                "actor.email" = $crate::Principal::email(actor),
                "actor.name" = $crate::Principal::name(actor),
                "actor.flags" = ?$crate::__private::Flags($crate::Principal::flags(actor)),
                $($fields)*
            }
        );
        __seen.after(::core::file!(), ::core::line!());
    }};
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::prelude::*;

    use crate::{AuditLayer, AuditRecord, Batch, DetailValue, Principal, Sink, SinkError};

    struct Service;
    impl Principal for Service {
        fn id(&self) -> std::borrow::Cow<'_, str> {
            "svc".into()
        }
    }

    #[derive(Clone, Default)]
    struct Keep(Arc<Mutex<Vec<AuditRecord>>>);

    impl Sink for Keep {
        fn write(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
            self.0.lock().unwrap().extend(batch.iter().cloned());
            Ok(())
        }
    }

    /// Every form compiles, and each field lands where it should.
    #[test]
    fn accepts_every_field_form() {
        let keep = Keep::default();
        let (layer, audit) = AuditLayer::builder()
            .sink("keep", keep.clone())
            .build()
            .unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        let title = "t";
        let count = 3;
        let nested = (1, 2);
        tracing::subscriber::with_default(subscriber, || {
            audit!(action = "a.b");
            audit!(action = "a.b",);
            audit!(title, action = String::from("a.c"), count, ?nested);
            audit!(action = "a.e", %count);
            audit!(
                actor = Service,
                action = "a.d",
                "http.method" = "GET",
                "x" = %title,
                "y" = ?nested,
                a.b = 1,
                c = %count,
                d = ?count,
            );
        });
        assert!(audit.shutdown_blocking().is_lossless());
        let records = keep.0.lock().unwrap().clone();
        let actions: Vec<&str> = records.iter().map(|r| r.action()).collect();
        assert_eq!(actions, ["a.b", "a.b", "a.c", "a.e", "a.d"]);
        assert_eq!(records[1].detail().len(), 0);
        let keys = |r: &AuditRecord| r.detail().map(|(k, _)| k.to_owned()).collect::<Vec<_>>();
        assert_eq!(keys(&records[2]), ["title", "count", "nested"]);
        assert_eq!(records[2].detail_value("count"), Some(DetailValue::I64(3)));
        assert_eq!(
            records[2].detail_value("nested"),
            Some(DetailValue::Str("(1, 2)"))
        );
        assert_eq!(
            records[3].detail_value("count"),
            Some(DetailValue::Str("3"))
        );
        assert_eq!(records[4].actor_id(), Some("svc"));
        assert_eq!(
            keys(&records[4]),
            ["http.method", "x", "y", "a.b", "c", "d"]
        );
        assert_eq!(records[4].detail_value("a.b"), Some(DetailValue::I64(1)));
        assert_eq!(records[4].detail_value("c"), Some(DetailValue::Str("3")));
    }
}
