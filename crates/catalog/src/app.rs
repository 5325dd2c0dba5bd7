//! The app registry: which apps exist, with a display name and the time zone and currency their
//! new settings start from, and the service keys stored for them.
//!
//! An app is one ledger and one catalog. A request naming an app the registry does not hold is
//! refused, so that a typo in a token's `app` claim or an `X-App-Key` header never opens a new,
//! empty ledger. Apps are registered by configuration (`default`, `TALLY_APPS`, the apps of
//! `TALLY_SERVICE_KEYS`, all made sure of at start-up) or through the admin API; they are never
//! deleted, so a registered app stays registered.

use time::OffsetDateTime;

use crate::error::{CatalogError, Problems};
use crate::validate::{check_currency, normalise_currency};

/// Longest app display name, in characters.
pub const MAX_APP_NAME_CHARS: usize = 100;

/// Longest service key name, in characters.
pub const MAX_KEY_NAME_CHARS: usize = 100;

/// The time zone and currency an app starts with when nobody names others.
pub const DEFAULT_TIME_ZONE: &str = "UTC";
/// See [`DEFAULT_TIME_ZONE`].
pub const DEFAULT_CURRENCY: &str = "usd";

/// A registered app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// The key requests name it by (`X-App-Key`, a token's `app` claim, a service key's app).
    pub key: String,
    /// What operators and users see.
    pub name: String,
    /// The IANA time zone a new check-in configuration starts from.
    pub time_zone: String,
    /// The currency a new plan or pack is priced in when it names none.
    pub currency: String,
    /// When it was registered.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

/// What an app is registered with; every field but the key has a default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppSpec {
    /// The key; see [`tally_kernel::is_app_key`].
    pub key: String,
    /// Display name; the key when absent.
    pub name: Option<String>,
    /// IANA time zone; `UTC` when absent.
    pub time_zone: Option<String>,
    /// Currency; `usd` when absent.
    pub currency: Option<String>,
}

/// A change to an app: absent fields keep their value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppPatch {
    /// New display name.
    pub name: Option<String>,
    /// New time zone.
    pub time_zone: Option<String>,
    /// New currency.
    pub currency: Option<String>,
}

/// The registry fields of an app, checked: what the store writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFields {
    /// Display name.
    pub name: String,
    /// IANA time zone.
    pub time_zone: String,
    /// Lower-case currency code.
    pub currency: String,
}

impl AppSpec {
    /// The app this spec registers, every field checked and every problem listed.
    pub fn validated(self) -> Result<(String, AppFields), CatalogError> {
        let mut p = Problems::default();
        p.check(
            tally_kernel::is_app_key(&self.key),
            "key",
            tally_kernel::APP_KEY_RULE,
        );
        let fields = AppFields {
            name: self
                .name
                .map_or_else(|| self.key.clone(), |n| n.trim().to_owned()),
            time_zone: self
                .time_zone
                .unwrap_or_else(|| DEFAULT_TIME_ZONE.to_owned()),
            currency: normalise_currency(self.currency.as_deref().unwrap_or(DEFAULT_CURRENCY)),
        };
        fields.check(&mut p);
        p.finish()?;
        Ok((self.key, fields))
    }
}

impl AppPatch {
    /// `current` with this patch applied, checked.
    pub fn merge(self, current: &App) -> Result<AppFields, CatalogError> {
        let mut p = Problems::default();
        let fields = AppFields {
            name: self
                .name
                .map_or_else(|| current.name.clone(), |n| n.trim().to_owned()),
            time_zone: self.time_zone.unwrap_or_else(|| current.time_zone.clone()),
            currency: self
                .currency
                .map_or_else(|| current.currency.clone(), |c| normalise_currency(&c)),
        };
        fields.check(&mut p);
        p.finish()?;
        Ok(fields)
    }
}

impl AppFields {
    fn check(&self, p: &mut Problems) {
        let name = &self.name;
        p.check(
            !name.is_empty()
                && name.chars().count() <= MAX_APP_NAME_CHARS
                && !tally_kernel::has_control_chars(name, false),
            "name",
            format!("must be 1-{MAX_APP_NAME_CHARS} characters without control characters"),
        );
        p.check(
            is_time_zone(&self.time_zone),
            "time_zone",
            format!("unknown IANA time zone '{}'", self.time_zone),
        );
        check_currency(p, "currency", &self.currency);
    }
}

/// Whether `name` is an IANA time zone in the bundled database (`UTC`, `Europe/Paris`, …).
pub fn is_time_zone(name: &str) -> bool {
    name.len() <= 64 && jiff::tz::TimeZone::get(name).is_ok()
}

/// A service key stored in the database: only its SHA-256 hash and the first characters of the
/// secret (to tell keys apart in a list) are kept; the secret is shown once, at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceKey {
    /// Row id.
    pub id: i64,
    /// The app the key acts for.
    pub app: String,
    /// What the key is for, e.g. `chat-backend`.
    pub name: String,
    /// The first characters of the secret.
    pub prefix: String,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: OffsetDateTime,
    /// When it was revoked; a revoked key opens nothing.
    pub revoked_at: Option<OffsetDateTime>,
}

/// A service key about to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewServiceKey {
    /// The app.
    pub app: String,
    /// What it is for.
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// The first characters of the secret.
    pub prefix: String,
    /// Who creates it.
    pub actor: String,
    /// When.
    pub now: OffsetDateTime,
}

/// A service key's name: 1–100 characters without control characters.
pub fn check_key_name(name: &str) -> Result<(), CatalogError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_KEY_NAME_CHARS
        || tally_kernel::has_control_chars(name, false)
    {
        return Err(CatalogError::invalid(
            "name",
            format!("must be 1-{MAX_KEY_NAME_CHARS} characters without control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(e: CatalogError) -> Vec<String> {
        match e {
            CatalogError::Validation(f) => f.into_iter().map(|f| f.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_spec_takes_defaults_and_lists_every_problem() {
        let (key, f) = AppSpec {
            key: "shop".into(),
            ..AppSpec::default()
        }
        .validated()
        .unwrap();
        assert_eq!(key, "shop");
        assert_eq!(
            (f.name.as_str(), f.time_zone.as_str(), f.currency.as_str()),
            ("shop", "UTC", "usd")
        );
        let (_, f) = AppSpec {
            key: "tokyo".into(),
            name: Some("Tokyo shop".into()),
            time_zone: Some("Asia/Tokyo".into()),
            currency: Some(" JPY ".into()),
        }
        .validated()
        .unwrap();
        assert_eq!(f.currency, "jpy");
        let bad = AppSpec {
            key: "with space".into(),
            name: Some("tab\there".into()),
            time_zone: Some("Mars/Olympus".into()),
            currency: Some("xyz".into()),
        };
        assert_eq!(
            fields(bad.validated().unwrap_err()),
            ["key", "name", "time_zone", "currency"]
        );
    }

    #[test]
    fn a_patch_keeps_what_it_does_not_name() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let app = App {
            key: "shop".into(),
            name: "Shop".into(),
            time_zone: "Europe/Paris".into(),
            currency: "eur".into(),
            created_at: now,
            updated_at: now,
        };
        let f = AppPatch {
            name: Some("Shop EU".into()),
            ..AppPatch::default()
        }
        .merge(&app)
        .unwrap();
        assert_eq!(
            (f.name.as_str(), f.time_zone.as_str(), f.currency.as_str()),
            ("Shop EU", "Europe/Paris", "eur")
        );
        let e = AppPatch {
            name: Some(String::new()),
            ..AppPatch::default()
        }
        .merge(&app)
        .unwrap_err();
        assert_eq!(fields(e), ["name"]);
    }

    #[test]
    fn key_names_are_one_line() {
        assert!(check_key_name("chat backend").is_ok());
        assert!(check_key_name("").is_err());
        assert!(check_key_name("a\nb").is_err());
        assert!(check_key_name(&"k".repeat(101)).is_err());
    }
}
