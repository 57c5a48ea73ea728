//! "Did you mean ...?" suggestions: the agent uses the core's, which plugins share.

pub use alumet::suggest::closest;
