//! The citizen portal: the catalogue of administrative procedures, dossiers from
//! application to signed result, the officers' back office, the payment provider (the
//! `payment` role), the data tracker and the KPIs of Decision 766/QĐ-TTg.

pub mod attachment;
pub mod bench;
pub mod calendar;
pub mod catalogue;
pub mod dossier;
pub mod evidence;
pub mod exchange;
pub mod kpi;
pub mod office;
pub mod payment;
pub mod payment_client;
pub mod prefill;
pub mod qr;
pub mod registration;
pub mod result;
pub mod service;
pub mod signature;
pub mod signin;
pub mod smtp;
pub mod text;
pub mod tracker;
