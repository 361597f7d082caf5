//! The shared page kit of Xalo's applications: one layout with a Vietnamese/English
//! language switch and a skip link ([`page`]), typed translation catalogues ([`lang`]),
//! accessible forms with labels and error summaries ([`form`]), and cookie sessions
//! kept in the database with a synchroniser CSRF token checked on every POST
//! ([`session`]).
//!
//! Pages work without JavaScript: the kit serves none.

pub mod form;
pub mod lang;
pub mod page;
pub mod session;

pub use form::{Field, FieldKind, Form};
pub use lang::{Common, Lang};
pub use page::{Page, html};
pub use session::{Session, SessionSettings, SessionUpdate, Sessions};
