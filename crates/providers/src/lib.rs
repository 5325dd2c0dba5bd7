//! Tally's payment providers: Stripe, Creem and the local sandbox, each implementing the checkout
//! crate's [`PaymentProvider`](tally_checkout::PaymentProvider) port.
//!
//! No provider SDK is used: the API surface Tally needs is four calls and one webhook scheme per
//! provider, and owning the wire format lets webhook parsing stay lenient across API versions
//! (fields move; unknown values must never fail an event). Webhooks are verified over the raw
//! body, in constant time, before anything in them is read.
//!
//! - [`HttpClient`] / [`HttpConfig`]: the one shared HTTP client, with timeouts and bounded
//!   retries.
//! - [`StripeProvider`] / [`StripeConfig`]: Stripe Checkout, billing portal, coupons, webhooks.
//! - [`CreemProvider`] / [`CreemConfig`]: Creem checkouts, customer portal, discounts, webhooks.
//! - [`SandboxProvider`] / [`SandboxConfig`]: the local test channel and its signed deliveries.

mod creem;
mod http;
mod json;
mod sandbox;
mod signature;
mod stripe;

#[cfg(test)]
mod tests;

pub use creem::{CREEM_API_BASE, CREEM_TEST_API_BASE, CreemConfig, CreemProvider, creem_api_base};
pub use http::{HttpClient, HttpConfig};
pub use sandbox::{SANDBOX_SIGNATURE_HEADER, SandboxConfig, SandboxProvider};
pub use signature::STRIPE_TOLERANCE_SECONDS;
pub use stripe::{STRIPE_API_BASE, STRIPE_API_VERSION, StripeConfig, StripeProvider};
