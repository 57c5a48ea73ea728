//! The attributes of a point, shared between the points that carry the same
//! list.
//!
//! A source emits the same attributes on many points: procfs's `exe` and
//! `mode` on five points per process per poll, the cgroups plugin's job or
//! pod labels on every point of a cgroup. With a list of its own per point,
//! each point cost an allocation when built and a free when written, in two
//! different threads; with 3 000 processes that was ~5 % of the agent's
//! CPU time (BENCHMARKS.md, "Node scale"). An
//! [`Attributes`] is reference-counted: a source builds a list once (per
//! process, per cgroup) and every point takes a clone, which copies a
//! pointer. Changing a shared list (a transform adding a key) copies it
//! first, so a point never changes another's attributes.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use super::AttributeValue;

/// One attribute: its key and value.
pub type Attribute = (Cow<'static, str>, AttributeValue);

/// A point's attributes, in order (see the module's comment): read as a
/// slice; [`Attributes::push`] and the other changes copy a shared list
/// before changing it. Empty costs no allocation.
#[derive(Clone, Default)]
pub struct Attributes(Option<Arc<Vec<Attribute>>>);

impl Attributes {
    /// No attributes.
    pub const fn new() -> Self {
        Self(None)
    }

    /// Adds an attribute at the end.
    pub fn push(&mut self, attribute: Attribute) {
        self.make_mut().push(attribute);
    }

    /// The attributes, to change in place (a shared list is copied first).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Attribute> {
        match self.0 {
            None => [].iter_mut(),
            Some(_) => self.make_mut().iter_mut(),
        }
    }

    /// Keeps only the attributes for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&Attribute) -> bool) {
        if self.0.is_some() {
            self.make_mut().retain(keep);
        }
    }

    /// Whether both are the same shared list (not only equal).
    pub fn ptr_eq(&self, other: &Attributes) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    fn make_mut(&mut self) -> &mut Vec<Attribute> {
        Arc::make_mut(self.0.get_or_insert_with(Default::default))
    }
}

impl std::ops::Deref for Attributes {
    type Target = [Attribute];

    fn deref(&self) -> &[Attribute] {
        match &self.0 {
            Some(list) => list,
            None => &[],
        }
    }
}

impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<Attribute>> for Attributes {
    fn from(list: Vec<Attribute>) -> Self {
        if list.is_empty() {
            Self(None)
        } else {
            Self(Some(Arc::new(list)))
        }
    }
}

impl FromIterator<Attribute> for Attributes {
    fn from_iter<I: IntoIterator<Item = Attribute>>(iter: I) -> Self {
        Vec::from_iter(iter).into()
    }
}

impl Extend<Attribute> for Attributes {
    fn extend<I: IntoIterator<Item = Attribute>>(&mut self, iter: I) {
        let mut iter = iter.into_iter().peekable();
        if iter.peek().is_some() {
            self.make_mut().extend(iter);
        }
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = &'a Attribute;
    type IntoIter = std::slice::Iter<'a, Attribute>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(k: &'static str, v: &'static str) -> Attribute {
        (Cow::Borrowed(k), AttributeValue::from(v))
    }

    #[test]
    fn clones_share_the_list_and_a_change_copies_it_first() {
        let shared: Attributes = vec![attr("exe", "make")].into();
        let mut a = shared.clone();
        assert!(a.ptr_eq(&shared));
        a.push(attr("mode", "user"));
        assert!(!a.ptr_eq(&shared));
        assert_eq!(shared.len(), 1, "the other points keep their list");
        assert_eq!(&a[..], &[attr("exe", "make"), attr("mode", "user")]);
        for (_, v) in a.iter_mut() {
            *v = AttributeValue::from("x");
        }
        assert_eq!(shared[0].1, AttributeValue::from("make"));
        a.retain(|(k, _)| k == "mode");
        assert_eq!(&a[..], &[attr("mode", "x")]);
    }

    #[test]
    fn empty_costs_nothing_and_compares_by_content() {
        let mut empty = Attributes::new();
        assert!(empty.is_empty());
        assert_eq!(empty.iter_mut().count(), 0);
        empty.extend(std::iter::empty());
        assert!(empty.ptr_eq(&Attributes::new()), "still no allocation");
        let a: Attributes = vec![attr("k", "v")].into();
        let b: Attributes = [attr("k", "v")].into_iter().collect();
        assert_eq!(a, b);
        assert!(!a.ptr_eq(&b));
        assert_eq!(format!("{a:?}"), format!("{:?}", vec![attr("k", "v")]));
    }
}
