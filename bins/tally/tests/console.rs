//! The operators' console: signing in with a one-time link, sessions, CSRF, escaping, and an
//! operator's round in a real headless Chromium (with screenshots under
//! `target/screenshots/`), on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "common/mod.rs"]
mod common;

#[path = "browser/cdp.rs"]
mod cdp;

// The console test uses the receiver's start and count only.
#[allow(dead_code)]
#[path = "webhooks/receiver.rs"]
mod receiver;

#[path = "console/browser.rs"]
mod browser;
#[path = "console/portal.rs"]
mod portal;
#[path = "console/security.rs"]
mod security;
