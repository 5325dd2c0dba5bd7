//! The `tally` binary's library half: settings, start-up as a value, and the admin commands, so
//! that tests start the server exactly as the binary does.

pub mod settings;
pub mod startup;
pub mod token;

pub use settings::{Secret, Settings};
pub use startup::{Application, StartupError};
