//! Process names shared by every point that carries them: the `exe`
//! attribute of a process's 5 points per poll then costs no allocation
//! (15 000 allocations per second with 3 000 processes, BENCHMARKS.md).
//!
//! A name is stored once, for the life of the agent, as a `&'static str`.
//! How many are stored is bounded ([`MAX_NAMES`]; a name is at most 15
//! bytes in the kernel), so a machine that makes up new names without end
//! costs at most about a megabyte; beyond the bound, names are allocated
//! per point as before.

use std::borrow::Cow;
use std::collections::HashSet;

/// Most distinct names kept.
pub const MAX_NAMES: usize = 16_384;

/// The names seen so far.
#[derive(Debug, Default)]
pub struct Names {
    known: HashSet<&'static str>,
}

impl Names {
    /// `name`, borrowed from the stored copy when there is (or can be) one.
    pub fn get(&mut self, name: &str) -> Cow<'static, str> {
        if let Some(known) = self.known.get(name) {
            return Cow::Borrowed(known);
        }
        if self.known.len() >= MAX_NAMES {
            return Cow::Owned(name.to_owned());
        }
        let stored: &'static str = Box::leak(name.to_owned().into_boxed_str());
        self.known.insert(stored);
        Cow::Borrowed(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_storage_and_bounded() {
        let mut names = Names::default();
        let a = names.get("bash");
        let b = names.get("bash");
        assert!(matches!((&a, &b), (Cow::Borrowed(x), Cow::Borrowed(y)) if std::ptr::eq(*x, *y)));
        for i in 0..MAX_NAMES {
            names.get(&format!("n{i}"));
        }
        assert!(matches!(names.get("one too many"), Cow::Owned(s) if s == "one too many"));
        assert_eq!(names.known.len(), MAX_NAMES);
    }
}
