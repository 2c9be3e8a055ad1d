//! Alertmanager as a second sink beside email.

mod url;

pub use url::Url;
