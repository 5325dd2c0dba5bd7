//! `tally`: serve the billing API, migrate, verify the ledger, mint development tokens.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tally::token::{TokenRequest, mint};
use tally::{Application, Settings, startup};
use tally_ledger::{Ledger, SystemClock};

#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    about = "Self-hosted billing for SaaS and AI products"
)]
struct Cli {
    /// TOML settings file; `TALLY_*` environment variables override it.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check every ledger invariant; exits non-zero when any is broken.
    Verify,
    /// Mint an HS256 JWT with the configured secret (development and scripts).
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        user: String,
        /// `admin` for admin routes.
        #[arg(long)]
        role: Option<String>,
        /// App key (default: `default`).
        #[arg(long)]
        app: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Print a one-time URL that signs an operator in to the console (valid 10 minutes).
    ConsoleLink {
        /// The app the console acts in (default: `default`).
        #[arg(long, default_value = "default")]
        app: String,
        /// The operator's name, recorded as the actor of what they do.
        #[arg(long, default_value = "operator")]
        operator: String,
    },
    /// Write a consistent copy of the SQLite database to PATH while the server runs.
    Backup {
        /// Where the copy goes; must not exist yet.
        path: std::path::PathBuf,
    },
    /// Print the OpenAPI document.
    Openapi,
}

fn init_logging(settings: &Settings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},actix_server=warn", settings.log_level)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if settings.log_format == "pretty" {
        builder.init();
    } else {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tally: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Token {
            user,
            role,
            app,
            ttl,
        } => match mint(
            &settings,
            &TokenRequest {
                user,
                role,
                app,
                ttl_seconds: ttl,
            },
        ) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tally: {e}");
                ExitCode::from(2)
            }
        },
        Command::Openapi => {
            println!("{}", tally_api::openapi::document());
            ExitCode::SUCCESS
        }
        command => {
            init_logging(&settings);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tally: starting the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(run(command, settings))
        }
    }
}

/// Only `serve` and `migrate` create a database: another command pointed at a SQLite file that
/// is not there (a typo, another directory) stops instead of answering about an empty one.
fn refuse_missing_database(settings: &Settings) -> Result<(), String> {
    match startup::missing_sqlite_file(settings) {
        Some(path) => Err(format!(
            "no database at {}: check TALLY_DATABASE_URL (`tally serve` and `tally migrate` create one)",
            path.display()
        )),
        None => Ok(()),
    }
}

async fn run(command: Command, settings: Settings) -> ExitCode {
    let result: Result<ExitCode, String> = async {
        match command {
            Command::Migrate => {
                if let Some(path) = startup::missing_sqlite_file(&settings) {
                    eprintln!("tally: creating a new database at {}", path.display());
                }
                let store = tally_store::Store::connect(&settings.database_url)
                    .await
                    .map_err(|e| e.to_string())?;
                let n = store.migrate().await.map_err(|e| e.to_string())?;
                println!("applied {n} migrations");
                Ok(ExitCode::SUCCESS)
            }
            Command::Verify => {
                refuse_missing_database(&settings)?;
                let store = startup::open_store(&settings)
                    .await
                    .map_err(|e| e.to_string())?;
                let ledger = Ledger::new(store);
                let violations = ledger.verify().await.map_err(|e| e.to_string())?;
                if violations.is_empty() {
                    println!("ledger verified: no violations");
                    Ok(ExitCode::SUCCESS)
                } else {
                    for v in &violations {
                        println!(
                            "VIOLATION app={} user={} rule=\"{}\" {}",
                            v.app, v.user, v.rule, v.detail
                        );
                    }
                    println!("{} violations", violations.len());
                    Ok(ExitCode::FAILURE)
                }
            }
            Command::Backup { path } => {
                let bytes = tally_store::backup_sqlite(&settings.database_url, &path)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("backed up to {} ({bytes} bytes)", path.display());
                Ok(ExitCode::SUCCESS)
            }
            Command::ConsoleLink { app, operator } => {
                if !settings.console_enabled {
                    return Err("the console is switched off (TALLY_CONSOLE_ENABLED=false)".into());
                }
                tally_ledger::AccountRef::new(app.clone(), operator.clone())
                    .map_err(|e| format!("--app or --operator: {e}"))?;
                refuse_missing_database(&settings)?;
                let store = startup::open_store(&settings)
                    .await
                    .map_err(|e| e.to_string())?;
                // `default` is registered by the first `tally serve`; a link for it may come first.
                if app != tally_api::auth::DEFAULT_APP
                    && tally_catalog::CatalogRepository::app(&store, app.clone())
                        .await
                        .map_err(|e| e.to_string())?
                        .is_none()
                {
                    return Err(format!(
                        "app '{app}' is not registered: register it with TALLY_APPS or POST /admin/apps"
                    ));
                }
                let console =
                    tally_console::Console::new(Arc::new(store), time::Duration::minutes(60));
                let now = tally_ledger::Clock::now(&SystemClock);
                let token = console
                    .create_link(&app, &operator, now)
                    .await
                    .map_err(|e| e.to_string())?;
                println!(
                    "{}/console/login?token={token}",
                    settings.public_base_url(settings.bind_port())
                );
                eprintln!("Open it within 10 minutes; it works once.");
                Ok(ExitCode::SUCCESS)
            }
            _ => {
                let app = Application::build(settings, Arc::new(SystemClock))
                    .await
                    .map_err(|e| e.to_string())?;
                app.run_until_stopped().await.map_err(|e| e.to_string())?;
                Ok(ExitCode::SUCCESS)
            }
        }
    }
    .await;
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "tally failed");
        eprintln!("tally: {e}");
        ExitCode::FAILURE
    })
}
