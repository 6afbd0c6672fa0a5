//! Integration tests: the real server on port 0, run against SQLite and PostgreSQL alike.

mod bkci;
mod bkci_op;
mod bus;
mod callbacks;
mod cli;
mod common;
mod compat;
mod completeness;
mod delivery;
mod edges;
mod faults;
mod gateway;
mod hostile;
mod import;
mod isolation;
mod keys;
mod members;
mod pipelines;
mod prefixes;
mod processes;
mod promises;
mod readme;
mod receiver;
mod resilience;
mod secrets;
mod wakeup;
