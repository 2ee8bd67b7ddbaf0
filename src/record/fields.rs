//! The one list of the record's fields, and what Rust derives from it.
//!
//! Every place that handles "each field of the record" (the JSON object and
//! its fast writer, the deserializer, the accessors and builder setters, the
//! table Diesel sees, the rows written and read, PostgreSQL's UNNEST insert,
//! the schema check, the storage limits) expands the list in
//! [`with_record_fields!`] instead of spelling the fields out again. Adding a
//! nullable text field is one line here plus a migration per backend (and
//! the table of fields in the crate docs, which a test holds to this list).
//!
//! # Layout
//!
//! [`with_record_fields!`] is a *callback* macro: it calls the macro it is
//! given with the whole list, so that each consumer expands only what it
//! needs. [`with_text_fields!`] does the same with the text fields only (the
//! ones a [`Field`] names), already picked out of the list, so that no
//! consumer has to filter.
//!
//! One entry of the list, in the record's order (the JSON key order):
//!
//! ```text
//! { key, column, (SQL type), (type read), (type written), Role(role arguments) }
//! ```
//!
//! - `key`: the JSON key (and the accessor's name);
//! - `column`: the column of `audit_events` (`timestamp_us` is the only one
//!   that differs from its key);
//! - SQL type: Diesel's type for the column, `Nullable<…>` when absent
//!   values are allowed;
//! - type read: the column's Rust type in a row read back (`EventRow`);
//! - type written: its Rust type in a row to insert (`NewEvent<'a>`, which
//!   borrows the record's text);
//! - role: `Id`, `Timestamp`, `Flags`, `Detail` (each once, each with code of
//!   its own), or `Text(Variant, width, group, [aliases], getter, setter)`:
//!   a string field, stored in the record's text buffer.
//!
//! A text field's arguments:
//! - `Variant`: its [`Field`] variant;
//! - width: [`Width::Short`] (an indexable column, 255 characters) or
//!   [`Width::Long`] (65 535 bytes);
//! - group: how the layer inherits it from enclosing spans
//!   ([`Group::Actor`]: all actor fields from one span; [`Group::Request`]:
//!   field by field; [`Group::Own`]: never);
//! - aliases: the other spellings an event or span field may use
//!   (`actor.id` for `actor_id`);
//! - `get name "doc"` / `set name "doc"` (each optional): the public
//!   accessor on [`AuditRecord`](super::AuditRecord) and setter on
//!   [`RecordBuilder`](super::RecordBuilder) to generate. `action` has
//!   hand-written ones (it is never absent), and the resource's type and id
//!   are set together by `RecordBuilder::resource`.

/// Calls `$callback!` with every field of the record, in the record's order.
/// See the [module docs](self) for the shape of an entry.
macro_rules! with_record_fields {
    ($($callback:ident)::+ ! ( $($args:tt)* )) => {
        $($callback)::+! { $($args)* ;
            { id, id, (Text), (String), (String), Id() }
            { timestamp, timestamp_us, (BigInt), (i64), (i64), Timestamp() }
            { action, action, (Text), (String), (Cow<'a, str>),
                Text(Action, Short, Own, []) }
            { actor_id, actor_id, (Nullable<Text>), (Option<String>), (Option<Cow<'a, str>>),
                Text(ActorId, Short, Actor, ["actor.id"],
                    get actor_id "The actor's id.", set actor_id "Sets the actor's id.") }
            { actor_type, actor_type, (Nullable<Text>), (Option<String>), (Option<Cow<'a, str>>),
                Text(ActorType, Short, Actor, ["actor.type"],
                    get actor_type "The actor's type: `user`, `service`, `api_key`, …",
                    set actor_type "Sets the actor's type.") }
            { actor_email, actor_email, (Nullable<Text>), (Option<String>), (Option<Cow<'a, str>>),
                Text(ActorEmail, Long, Actor, ["actor.email"],
                    get actor_email "The actor's email address.",
                    set actor_email "Sets the actor's email address.") }
            { actor_name, actor_name, (Nullable<Text>), (Option<String>), (Option<Cow<'a, str>>),
                Text(ActorName, Long, Actor, ["actor.name"],
                    get actor_name "The actor's display name.",
                    set actor_name "Sets the actor's display name.") }
            { actor_flags, actor_flags, (Text), (String), (String), Flags() }
            { resource_type, resource_type, (Nullable<Text>), (Option<String>), (Option<Cow<'a, str>>),
                Text(ResourceType, Short, Own, ["resource.type"],
                    get resource_type "The type of the resource acted on: `post`.") }
            { resource_id, resource_id, (Nullable<Text>), (Option<String>), (Option<Cow<'a, str>>),
                Text(ResourceId, Short, Own, ["resource.id"],
                    get resource_id "The id of the resource acted on.") }
            { detail, detail, (Text), (String), (String), Detail() }
            { request_id, request_id, (Nullable<Text>), (Option<String>), (Option<Cow<'a, str>>),
                Text(RequestId, Short, Request, ["request.id"],
                    get request_id "The id of the request during which the event was emitted.",
                    set request_id "Sets the request id.") }
            { client_ip, client_ip, (Nullable<Text>), (Option<String>), (Option<Cow<'a, str>>),
                Text(ClientIp, Short, Request, ["client.ip"],
                    get client_ip "The client's IP address.",
                    set client_ip "Sets the client's IP address.") }
            { user_agent, user_agent, (Nullable<Text>), (Option<String>), (Option<Cow<'a, str>>),
                Text(UserAgent, Long, Request, ["user_agent.original"],
                    get user_agent "The client's user agent.",
                    set user_agent "Sets the client's user agent.") }
            { chain, chain, (Nullable<Text>), (Option<String>), (Option<Cow<'a, str>>),
                Text(Chain, Short, Link, [],
                    get chain "The hash chain the record was stored in: the writing instance and sink, such as `host-1/file`. Absent in a record not yet stored in a chain.") }
            { seq, seq, (Nullable<BigInt>), (Option<i64>), (Option<i64>), Seq() }
            { hash, hash, (Nullable<Text>), (Option<String>), (Option<Cow<'a, str>>),
                Text(Hash, Short, Link, [],
                    get hash "SHA-256 of the record and the hash of the record before it in its chain, as 64 lower-case hex digits.") }
        }
    };
}
pub(crate) use with_record_fields;

/// Calls `$callback!` with the text fields only, each as
/// `{ column Variant Width Group required [aliases] accessors… }`
/// (`required` is `true` where the column is not `Nullable`).
macro_rules! with_text_fields {
    ($($callback:ident)::+ ! ( $($args:tt)* )) => {
        $crate::record::fields::with_record_fields! {
            $crate::record::fields::__pick_text_fields!([$($callback)::+ ($($args)*)] [])
        }
    };
}
#[cfg(db)]
pub(crate) use with_text_fields;

/// [`with_text_fields!`]'s filter: walks the list, keeps the `Text` entries
/// in the accumulator (second bracket), then calls the callback.
macro_rules! __pick_text_fields {
    // The list is walked: call back.
    ([$($callback:ident)::+ ($($args:tt)*)] [$($kept:tt)*] ;) => {
        $($callback)::+! { $($args)* ; $($kept)* }
    };
    // A text field: keep it, in a shape that needs no more parsing.
    ([$($cb:tt)*] [$($kept:tt)*] ;
        { $key:ident, $column:ident, ($($sql:tt)*), ($($read:tt)*), ($($write:tt)*),
          Text($variant:ident, $width:ident, $group:ident, [$($alias:literal),*] $(, $($accessor:tt)*)?) }
        $($rest:tt)*) => {
        $crate::record::fields::__pick_text_fields! {[$($cb)*] [$($kept)*
            { $column $variant $width $group ($crate::record::fields::__required!($($sql)*)) [$($alias),*] $($($accessor)*)? }
        ] ; $($rest)*}
    };
    // Any other field: skip it.
    ([$($cb:tt)*] [$($kept:tt)*] ; { $($other:tt)* } $($rest:tt)*) => {
        $crate::record::fields::__pick_text_fields! {[$($cb)*] [$($kept)*] ; $($rest)*}
    };
}
pub(crate) use __pick_text_fields;

/// Whether a column of this Diesel type must hold a value.
macro_rules! __required {
    (Nullable<$inner:ident>) => {
        false
    };
    ($($other:tt)*) => {
        true
    };
}
pub(crate) use __required;

/// How wide a stored text field may be (see `db::stored`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Width {
    /// An indexable column: 255 characters (`VARCHAR(255)` on MySQL).
    Short,
    /// 65 535 bytes (`TEXT` on MySQL).
    Long,
}

/// How the layer fills a field that the event leaves empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Group {
    /// Never inherited.
    Own,
    /// Inherited as a group from the nearest span that has an actor.
    Actor,
    /// Inherited field by field from enclosing spans.
    Request,
    /// The record's place in a hash chain: set where the record is stored,
    /// never from an event or a span (an event's `chain` or `hash` field is
    /// detail like any other).
    Link,
}

/// Defines [`Field`] and its tables from the text fields.
macro_rules! define_field {
    (; $({ $column:ident $variant:ident $width:ident $group:ident ($($required:tt)*)
            [$($alias:literal),*] $($accessor:tt)* })*) => {
        /// A text field of the record, by position in `AuditRecord::text_fields`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum Field {
            $(
                #[doc = concat!("`", stringify!($column), "`")]
                $variant,
            )*
        }

        impl Field {
            /// Every text field, in the record's order.
            pub(crate) const ALL: [Field; [$(Field::$variant),*].len()] = [$(Field::$variant),*];

            /// How many text fields there are.
            pub(crate) const COUNT: usize = Self::ALL.len();

            /// The field an event or span field of this name fills, if any.
            ///
            /// Both spellings are accepted: `actor.id` (what `audit!` emits,
            /// and the OpenTelemetry-like style of span fields) and
            /// `actor_id` (the record's column name).
            pub(crate) fn from_name(name: &str) -> Option<Self> {
                let field = match name {
                    $(stringify!($column) $(| $alias)* => Self::$variant,)*
                    _ => return None,
                };
                (field.group() != Group::Link).then_some(field)
            }

            /// The record's name for this field: its JSON key and column.
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($column),)*
                }
            }

            /// How wide the stored field may be.
            #[cfg_attr(not(db), allow(dead_code))]
            pub(crate) fn width(self) -> Width {
                match self {
                    $(Self::$variant => Width::$width,)*
                }
            }

            /// Whether the record always has this field (its column is
            /// `NOT NULL`).
            pub(crate) fn is_required(self) -> bool {
                match self {
                    $(Self::$variant => $($required)*,)*
                }
            }

            fn group(self) -> Group {
                match self {
                    $(Self::$variant => Group::$group,)*
                }
            }
        }
    };
}

with_text_fields!(define_field!());

impl Field {
    /// Whether this field is request context (inherited field by field).
    pub(crate) fn is_request(self) -> bool {
        self.group() == Group::Request
    }

    /// Whether this field belongs to the actor group (inherited as a whole).
    pub(crate) fn is_actor(self) -> bool {
        self.group() == Group::Actor
    }
}

/// What a key of the record's JSON object holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Id,
    Timestamp,
    Text(Field),
    Flags,
    Detail,
    /// `seq`: the record's place in its chain, an integer.
    Seq,
}

/// One key of the record's JSON object.
#[derive(Debug)]
pub(crate) struct Key {
    /// The key.
    pub(crate) name: &'static str,
    /// `,"name":`, as the JSON writer puts it after the previous value.
    pub(crate) json: &'static [u8],
    pub(crate) role: Role,
}

/// A field's role from its list entry.
macro_rules! __role {
    (Text($variant:ident, $($rest:tt)*)) => {
        Role::Text(Field::$variant)
    };
    ($role:ident()) => {
        Role::$role
    };
}

/// Defines [`KEYS`] and [`NAMES`] from the list.
macro_rules! define_keys {
    (; $({ $key:ident, $column:ident, ($($sql:tt)*), ($($read:tt)*), ($($write:tt)*),
            $role:ident ( $($arg:tt)* ) })*) => {
        /// The record's JSON keys, in order.
        pub(crate) const KEYS: [Key; [$(stringify!($key)),*].len()] = [$(Key {
            name: stringify!($key),
            json: concat!(",\"", stringify!($key), "\":").as_bytes(),
            role: __role!($role($($arg)*)),
        }),*];

        /// The keys' names (for serde's "expected one of" errors).
        pub(crate) const NAMES: &[&str] = &[$(stringify!($key)),*];
    };
}

with_record_fields!(define_keys!());

/// Defines the public accessors and builder setters of the text fields that
/// have them.
macro_rules! define_accessors {
    (; $({ $column:ident $variant:ident $width:ident $group:ident ($($required:tt)*)
            [$($alias:literal),*]
            $(get $getter:ident $get_doc:literal)? $(,)? $(set $setter:ident $set_doc:literal)? })*) => {
        impl super::AuditRecord {
            $($(
                #[doc = $get_doc]
                pub fn $getter(&self) -> Option<&str> {
                    self.get(Field::$variant)
                }
            )?)*
        }

        impl super::RecordBuilder {
            $($(
                #[doc = $set_doc]
                pub fn $setter(self, value: impl AsRef<str>) -> Self {
                    self.with(Field::$variant, value.as_ref())
                }
            )?)*
        }
    };
}

with_text_fields!(define_accessors!());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_field_has_one_key_in_order() {
        let texts: Vec<Field> = KEYS
            .iter()
            .filter_map(|k| match k.role {
                Role::Text(f) => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(texts, Field::ALL);
        for (i, field) in Field::ALL.iter().enumerate() {
            assert_eq!(*field as usize, i, "{field:?}");
            let from_events = field.group() != Group::Link;
            assert_eq!(
                Field::from_name(field.name()),
                from_events.then_some(*field)
            );
        }
        assert_eq!(Field::from_name("chain"), None);
        assert_eq!(Field::from_name("hash"), None);
        for role in [
            Role::Id,
            Role::Timestamp,
            Role::Flags,
            Role::Detail,
            Role::Seq,
        ] {
            assert_eq!(
                KEYS.iter().filter(|k| k.role == role).count(),
                1,
                "{role:?}"
            );
        }
        let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(names, NAMES);
        for key in &KEYS {
            assert_eq!(key.json, format!(",\"{}\":", key.name).as_bytes());
        }
    }

    #[test]
    fn only_action_is_required() {
        let required: Vec<Field> = Field::ALL.into_iter().filter(|f| f.is_required()).collect();
        assert_eq!(required, [Field::Action]);
    }

    /// The table of fields in the crate docs names every key of the list.
    #[test]
    fn crate_docs_list_every_field() {
        let lib = include_str!("../lib.rs");
        let table: Vec<&str> = lib
            .lines()
            .skip_while(|l| !l.contains("| field | type | notes |"))
            .skip(2)
            .take_while(|l| l.starts_with("//! |"))
            .collect();
        let mut documented: Vec<&str> = table
            .iter()
            .filter_map(|row| row.split('|').nth(1))
            .flat_map(|cell| cell.split(',').map(|n| n.trim().trim_matches('`')))
            .collect();
        documented.retain(|n| !n.is_empty());
        assert_eq!(documented, NAMES, "src/lib.rs's table of fields");
    }
}
