//! Per-output routing: which transforms a buffer goes through on its way
//! to each output.
//!
//! A transform is either for every output (the trunk: it sees every
//! buffer, in plugin order) or scoped to some outputs ([`OutputScope`]):
//! then it runs after the whole trunk, on a copy of the buffer that only
//! the outputs it names receive. So one pipeline writes raw 10 ms points to
//! a CSV file and 10 s aggregates to a remote store.
//!
//! An output's chain is the scoped transforms that name it, in plugin
//! order. Outputs whose chains begin alike share that part: the chains form
//! a tree (a trie), and a buffer is copied only where two branches part. A
//! stateful transform (an aggregation) must see one stream, so it may sit
//! at one node of that tree only; two scopes that cross (A for `csv`, then
//! B for `csv` and `influxdb`: B would see A's output for `csv` and the
//! trunk's for `influxdb`) are refused when they are committed
//! ([`RouteConflict`]).

use std::fmt;

/// Which outputs receive what a transform emits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OutputScope {
    /// Every output (the transform is part of the trunk).
    #[default]
    All,
    /// Only the outputs named here: an output plugin's name (`influxdb`)
    /// or an output's full name (`influxdb/influxdb`).
    Only(Vec<String>),
}

impl OutputScope {
    /// The scope of a configuration's list of output names: an empty list
    /// means every output.
    pub fn from_names(names: Vec<String>) -> Self {
        if names.is_empty() {
            OutputScope::All
        } else {
            OutputScope::Only(names)
        }
    }

    /// Whether the output `name` of plugin `plugin` is in the scope.
    pub fn includes(&self, plugin: &str, name: &str) -> bool {
        match self {
            OutputScope::All => true,
            OutputScope::Only(names) => names.iter().any(|n| n == plugin || n == name),
        }
    }
}

impl fmt::Display for OutputScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputScope::All => f.write_str("every output"),
            OutputScope::Only(names) => write!(f, "outputs [{}]", names.join(", ")),
        }
    }
}

/// Two scoped transforms whose scopes cross: the second would see two
/// different streams (see the module's comment).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "transform {transform} ({scope}) would run on two different streams: output {first} \
     receives it after {first_chain} and output {second} after {second_chain}; give the \
     scoped transforms equal, nested or disjoint lists of outputs"
)]
pub struct RouteConflict {
    /// The transform placed twice.
    pub transform: String,
    /// Its scope.
    pub scope: String,
    /// An output on one of its paths.
    pub first: String,
    /// The transforms before it on that path.
    pub first_chain: String,
    /// An output on the other path.
    pub second: String,
    /// The transforms before it on the other path.
    pub second_chain: String,
}

/// A node of the routing tree: one scoped transform (none at the root),
/// the outputs whose chain ends here, and the branches that go on.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct RouteNode {
    pub transform: Option<usize>,
    /// The transform already sits at another node (a conflict that got
    /// through): here the buffer passes it unchanged.
    pub skip: bool,
    pub outputs: Vec<usize>,
    pub children: Vec<RouteNode>,
}

/// How buffers flow: the trunk's transforms, then the tree.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct RoutePlan {
    /// Indices of the transforms for every output, in order.
    pub trunk: Vec<usize>,
    pub root: RouteNode,
    /// Scoped transforms that no running output receives (they see nothing).
    pub unrouted: Vec<usize>,
    /// Transforms that would sit at two nodes of the tree.
    pub conflicts: Vec<Crossing>,
}

/// A transform reached by two paths: `(path, output)` of each.
#[derive(Debug, PartialEq)]
pub(crate) struct Crossing {
    pub transform: usize,
    pub first: (Vec<usize>, usize),
    pub second: (Vec<usize>, usize),
}

/// Plans the routes of `transforms` (their scopes, in order) to `outputs`
/// (`(plugin, full name)` each, in order).
pub(crate) fn plan(transforms: &[&OutputScope], outputs: &[(&str, &str)]) -> RoutePlan {
    let mut plan = RoutePlan {
        trunk: transforms
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, OutputScope::All))
            .map(|(i, _)| i)
            .collect(),
        ..RoutePlan::default()
    };
    // Where each transform sits: its path (the transforms before it) and an output under it.
    let mut placed: Vec<Option<(Vec<usize>, usize)>> = vec![None; transforms.len()];
    for (o, (plugin, name)) in outputs.iter().enumerate() {
        let chain: Vec<usize> = transforms
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, OutputScope::Only(_)) && s.includes(plugin, name))
            .map(|(i, _)| i)
            .collect();
        let mut node = &mut plan.root;
        for (depth, &t) in chain.iter().enumerate() {
            let prefix = &chain[..depth];
            let skip = match &placed[t] {
                None => {
                    placed[t] = Some((prefix.to_vec(), o));
                    false
                }
                Some((path, other)) if path != prefix => {
                    if !plan.conflicts.iter().any(|c| c.transform == t) {
                        plan.conflicts.push(Crossing {
                            transform: t,
                            first: (path.clone(), *other),
                            second: (prefix.to_vec(), o),
                        });
                    }
                    true
                }
                Some(_) => false,
            };
            let at = match node.children.iter().position(|c| c.transform == Some(t)) {
                Some(at) => at,
                None => {
                    node.children.push(RouteNode {
                        transform: Some(t),
                        skip,
                        ..RouteNode::default()
                    });
                    node.children.len() - 1
                }
            };
            node = &mut node.children[at];
        }
        node.outputs.push(o);
    }
    plan.unrouted = (0..transforms.len())
        .filter(|&t| matches!(transforms[t], OutputScope::Only(_)) && placed[t].is_none())
        .collect();
    plan
}

/// The first conflict of `plan` as an error, with names.
pub(crate) fn first_conflict(
    plan: &RoutePlan,
    transforms: &[(&str, &OutputScope)],
    outputs: &[&str],
) -> Option<RouteConflict> {
    let Crossing {
        transform: t,
        first: (first_path, first),
        second: (second_path, second),
    } = plan.conflicts.first()?;
    let chain = |path: &[usize]| {
        if path.is_empty() {
            "the trunk".to_owned()
        } else {
            path.iter()
                .map(|&i| transforms.get(i).map_or("?", |t| t.0))
                .collect::<Vec<_>>()
                .join(" → ")
        }
    };
    let name = |i: usize| outputs.get(i).copied().unwrap_or("?").to_owned();
    let (transform, scope) = transforms.get(*t)?;
    Some(RouteConflict {
        transform: (*transform).to_owned(),
        scope: scope.to_string(),
        first: name(*first),
        first_chain: chain(first_path),
        second: name(*second),
        second_chain: chain(second_path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(names: &[&str]) -> OutputScope {
        OutputScope::Only(names.iter().map(|s| s.to_string()).collect())
    }

    const OUTS: [(&str, &str); 3] = [
        ("csv", "csv/csv"),
        ("influxdb", "influxdb/influxdb"),
        ("test", "test/collector"),
    ];

    #[test]
    fn unscoped_transforms_form_the_trunk_and_every_output_hangs_from_the_root() {
        let all = OutputScope::All;
        let p = plan(&[&all, &all], &OUTS);
        assert_eq!(p.trunk, vec![0, 1]);
        assert_eq!(p.root.outputs, vec![0, 1, 2]);
        assert!(p.root.children.is_empty());
        assert!(p.conflicts.is_empty() && p.unrouted.is_empty());
    }

    #[test]
    fn equal_and_nested_scopes_share_their_common_part() {
        let (a, b, c) = (
            only(&["influxdb", "test"]),
            only(&["influxdb/influxdb"]),
            OutputScope::All,
        );
        let p = plan(&[&a, &b, &c], &OUTS);
        assert_eq!(p.trunk, vec![2]);
        assert_eq!(p.root.outputs, vec![0], "csv takes the trunk's points");
        assert_eq!(p.root.children.len(), 1);
        let after_a = &p.root.children[0];
        assert_eq!(after_a.transform, Some(0));
        assert_eq!(after_a.outputs, vec![2]);
        assert_eq!(after_a.children[0].transform, Some(1));
        assert_eq!(after_a.children[0].outputs, vec![1]);
        assert!(p.conflicts.is_empty());
    }

    #[test]
    fn crossing_scopes_are_a_conflict_and_an_unknown_output_routes_nothing() {
        let (a, b, typo) = (
            only(&["csv"]),
            only(&["csv", "influxdb"]),
            only(&["influxbd"]),
        );
        let p = plan(&[&a, &b, &typo], &OUTS);
        assert_eq!(p.unrouted, vec![2]);
        assert_eq!(p.conflicts.len(), 1);
        let second = p
            .root
            .children
            .iter()
            .find(|c| c.transform == Some(1))
            .unwrap();
        assert!(
            second.skip,
            "the second place of a crossing transform passes buffers on"
        );
        assert!(!p.root.children[0].children[0].skip);
        let names = [("agg", &a), ("filter", &b), ("x", &typo)];
        let e = first_conflict(&p, &names, &["csv/csv", "influxdb/influxdb", "t"]).unwrap();
        assert_eq!(e.transform, "filter");
        assert_eq!(
            (e.first.as_str(), e.first_chain.as_str()),
            ("csv/csv", "agg")
        );
        assert_eq!(
            (e.second.as_str(), e.second_chain.as_str()),
            ("influxdb/influxdb", "the trunk")
        );
        assert!(e.to_string().contains("disjoint"), "{e}");
    }
}
