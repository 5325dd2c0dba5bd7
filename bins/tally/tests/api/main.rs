//! HTTP behaviour of the API, each test on both SQLite and PostgreSQL, through a real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod admin_users;
mod apps;
mod auth;
mod bad_input;
mod checkin;
mod codes;
mod cors;
mod expiry;
mod failures;
mod history_pages;
mod holds;
mod isolation;
mod metrics;
mod startup;
mod walkthrough;
