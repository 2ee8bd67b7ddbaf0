//! Integration tests: one binary, so the crate links once.

#[cfg(feature = "sqlite")]
mod proxy;
mod support;

#[cfg(all(feature = "http", feature = "sqlite"))]
mod app_fit;
mod chain;
mod checkpoints;
#[cfg(feature = "cli")]
mod cli;
mod compile;
#[cfg(all(feature = "config", feature = "sqlite"))]
mod config;
#[cfg(feature = "sqlite")]
mod db;
mod delivery;
mod file;
#[cfg(all(feature = "http", feature = "sqlite"))]
mod http;
#[cfg(feature = "cli")]
mod import;
mod layer;
#[cfg(feature = "metrics")]
mod metrics;
#[cfg(feature = "nats")]
mod nats;
#[cfg(all(feature = "http", feature = "sqlite"))]
mod openapi;
#[cfg(all(feature = "http", feature = "sqlite"))]
mod outcome;
#[cfg(feature = "cli")]
mod serve;
mod writer;
