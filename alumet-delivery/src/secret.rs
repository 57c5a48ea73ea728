//! Secrets (tokens, API keys, header values) as every output handles them:
//! the one implementation lives in `alumet::secret`, shared with the outputs
//! that do not deliver over this crate (the Prometheus endpoint).

pub use alumet::secret::{Redactor, Secret, SecretSource};
