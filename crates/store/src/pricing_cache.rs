//! Each app's pricing kept in memory: a usage call needs the app's features, rates, entitlements
//! and time zone, which change rarely and are read on every call.
//!
//! Every change to them raises the app's row in `pricing_generations` in the same transaction
//! (`queries::usage::bump_generation`). A call reads that one row; the copy here serves it when
//! it was loaded at that generation, and is loaded again otherwise. The generation is read
//! before what it labels, so a copy is never older than its label: another server's change is
//! seen by the first call whose transaction sees its generation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tally_ledger::pricing::{Feature, Rate};
use tally_ledger::usage::Entitlement;

/// An app's pricing at one generation.
#[derive(Debug, Default)]
pub(crate) struct Pricing {
    /// The app's features, by key.
    pub(crate) features: Vec<Feature>,
    /// Every rate version of the app.
    pub(crate) rates: Vec<Rate>,
    /// The entitlements of each scope (`free`, `plan:<id>`), in their order.
    pub(crate) entitlements: HashMap<String, Vec<Entitlement>>,
    /// The check-in time zone, which day and month windows follow.
    pub(crate) timezone: String,
}

impl Pricing {
    /// The rate versions of `features`.
    pub(crate) fn rates_of<'a>(&self, features: impl IntoIterator<Item = &'a String>) -> Vec<Rate> {
        let wanted: Vec<&String> = features.into_iter().collect();
        self.rates
            .iter()
            .filter(|r| wanted.contains(&&r.feature))
            .cloned()
            .collect()
    }

    /// The entitlements of `scope` (empty when it has none).
    pub(crate) fn scope(&self, scope: &str) -> &[Entitlement] {
        self.entitlements.get(scope).map_or(&[], Vec::as_slice)
    }
}

/// Each app's pricing with the generation it was loaded at.
type ByApp = HashMap<String, (i64, Arc<Pricing>)>;

/// The pricing of the apps this server has served, with the generation each was loaded at.
/// Cheap to clone; clones share the copies.
#[derive(Debug, Clone, Default)]
pub(crate) struct PricingCache(Arc<Mutex<ByApp>>);

impl PricingCache {
    /// The app's pricing if it was loaded at `generation`.
    pub(crate) fn get(&self, app: &str, generation: i64) -> Option<Arc<Pricing>> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(app)
            .filter(|(g, _)| *g == generation)
            .map(|(_, p)| p.clone())
    }

    /// Keeps `pricing`, loaded at `generation`, unless a newer one is kept already.
    pub(crate) fn put(&self, app: &str, generation: i64, pricing: Arc<Pricing>) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(app) {
            Some((g, _)) if *g > generation => {}
            _ => {
                map.insert(app.to_owned(), (generation, pricing));
            }
        }
    }
}
