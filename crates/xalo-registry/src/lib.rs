//! The base registries: the population register and the business register, each owned by
//! its member (the Ministry of Public Security, the Ministry of Finance), shared through
//! the exchange and never copied.
//!
//! - [`admin_unit`]: Vietnam's 34 provinces and 3,321 communes after the 2025 reform.
//! - [`model`]: people, enterprises, tax codes.
//! - [`store`]: tables and queries; [`text`]: search folding.

pub mod access_log;
pub mod admin_unit;
pub mod bench;
pub mod event;
pub mod generate;
pub mod model;
pub mod names;
pub mod registration;
pub mod service;
pub mod store;
pub mod text;
