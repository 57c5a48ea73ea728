//! Configuration: the file, its defaults with comments, `--set`/`--plugins`
//! overrides, two-pass validation (`load`), the diagnostics that name file,
//! line, key and the closest valid name (`diagnostics`, `suggest`), and the
//! static list of built-in plugins (`plugins`).

pub mod diagnostics;
pub mod load;
pub mod plugins;
pub mod suggest;
