//! JWT secrets: generated on first start when none is configured, and minted into tokens by
//! `tally token` for development and scripts.

use std::io::Write;
use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::{Secret, Settings};

/// Where the HS256 secret came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `TALLY_JWT_SECRET` or the config file.
    Configured,
    /// A file beside the database, created now.
    Generated(std::path::PathBuf),
    /// A file beside the database, created by an earlier start.
    Stored(std::path::PathBuf),
}

/// The HS256 secret to use, generating and storing one (owner-only permissions) when neither
/// the settings nor an earlier start provide it. Never a guessable default.
pub fn resolve_secret(settings: &Settings) -> Result<(Secret, SecretSource), String> {
    if let Some(s) = &settings.jwt_secret {
        return Ok((s.clone(), SecretSource::Configured));
    }
    let path = settings.secret_file()?;
    if path.exists() {
        let s = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        return Ok((Secret::new(s.trim()), SecretSource::Stored(path)));
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, &secret)?;
    Ok((Secret::new(secret), SecretSource::Generated(path)))
}

fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: i64,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// What `tally token` puts in a token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `sub`.
    pub user: String,
    /// `role`, e.g. `admin`.
    pub role: Option<String>,
    /// `app`.
    pub app: Option<String>,
    /// Lifetime.
    pub ttl_seconds: i64,
}

/// The secret `tally serve` signs with, without making one: the configured secret, else the
/// file the server wrote beside its SQLite database on its first start.
pub fn server_secret(settings: &Settings) -> Result<Secret, String> {
    if let Some(s) = &settings.jwt_secret {
        return Ok(s.clone());
    }
    let path = settings.secret_file()?;
    if !path.exists() {
        return Err(format!(
            "no JWT secret: the server writes {} on its first start, or takes TALLY_JWT_SECRET; \
             start it once, or run this with the server's TALLY_DATABASE_URL or TALLY_JWT_SECRET",
            path.display()
        ));
    }
    let s =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(Secret::new(s.trim()))
}

/// Mints an HS256 token with the server's secret, refusing what the server would refuse.
pub fn mint(settings: &Settings, req: &TokenRequest) -> Result<String, String> {
    if !settings.jwt_algorithm.eq_ignore_ascii_case("HS256") {
        return Err("tally token mints HS256 tokens only; with RS256/ES256/EdDSA your identity provider issues them".into());
    }
    if req.ttl_seconds <= 0 {
        return Err("--ttl must be positive".into());
    }
    tally_ledger::AccountRef::new(req.app.as_deref().unwrap_or("default"), req.user.as_str())
        .map_err(|e| format!("--user or --app: {e}"))?;
    if !matches!(req.role.as_deref(), None | Some("user" | "admin")) {
        return Err("--role must be user or admin".into());
    }
    let secret = server_secret(settings)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = Claims {
        sub: &req.user,
        exp: now + req.ttl_seconds,
        iat: now,
        role: req.role.as_deref(),
        app: req.app.as_deref(),
        iss: settings.jwt_issuer.as_deref(),
        aud: settings.jwt_audience.as_deref(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| format!("signing: {e}"))
}
