//! Integration tests: one binary, so the crate links once.

mod proxy;
mod support;

mod compile;
mod db;
mod delivery;
mod file;
mod layer;
