//! Sets the `db` cfg when any database backend is on: one name for
//! `any(feature = "sqlite", feature = "postgres", feature = "mysql")`,
//! usable where the crate's `cfg_db!` macro is not (fields, statements).
//! (The `db` feature is no such name: `http` turns it on without a backend.)

fn main() {
    println!("cargo::rustc-check-cfg=cfg(db)");
    let backend = ["SQLITE", "POSTGRES", "MYSQL"]
        .iter()
        .any(|name| std::env::var_os(format!("CARGO_FEATURE_{name}")).is_some());
    if backend {
        println!("cargo::rustc-cfg=db");
    }
}
