//! The crate's conditional compilation, named once.
//!
//! `build.rs` sets the `db` cfg when any database backend feature is on;
//! [`cfg_db!`] gates items on it and, on docs.rs, marks them with the
//! features that bring them in, so a reader sees which one to enable.

/// Items that need a database backend: compiled with any of the features
/// `sqlite`, `postgres` or `mysql`, and marked so on docs.rs. Fields,
/// statements and attributes use `#[cfg(db)]` directly.
macro_rules! cfg_db {
    ($($item:item)*) => {
        $(
            #[cfg(db)]
            #[cfg_attr(
                docsrs,
                doc(cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql")))
            )]
            $item
        )*
    };
}
