//! National sign-in: an OpenID Connect provider in the manner of Estonia's TARA (the `id`
//! role, [`provider`]), with ID-card login by TLS client certificate ([`id_card`]) and
//! Mobile-ID ([`mobile_id`]) against a mobile operator's service (the `mobile-id` role,
//! [`operator`]). Citizens and e-Residents sign in the same ways; the claims say which.

pub mod attempt;
pub mod bench;
pub mod certificate;
pub mod client;
pub mod evidence;
pub mod grant;
pub mod id_card;
pub mod identity;
pub mod jws;
pub mod mobile_id;
pub mod operator;
pub mod provider;
pub mod signing;
pub mod signing_key;
pub mod sms;
pub mod store;
pub mod text;

pub use provider::{ProviderSettings, ROLE, serve};
