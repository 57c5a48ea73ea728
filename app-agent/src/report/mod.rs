//! What a measurement reports: the summary output that aggregates the
//! window (`summary`), the carbon lines (`carbon`), the report itself as
//! text and JSON (`document`), the whole node's breakdown into components
//! and the rest of the node (`node`), plots (`plot`), and the series keys
//! and energy names they share (`series`).

pub mod carbon;
pub mod document;
pub mod node;
pub mod plot;
pub mod series;
pub mod summary;
