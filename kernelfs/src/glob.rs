//! Glob patterns (`*` any run of bytes, `?` any one byte) that select
//! processes by name or command line, and cgroups by path.

/// A glob pattern matched against the whole text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(Vec<u8>);

impl Glob {
    /// A pattern; every byte other than `*` and `?` matches itself.
    pub fn new(pattern: &str) -> Self {
        Self(pattern.as_bytes().to_vec())
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &[u8]) -> bool {
        let p = &self.0;
        let (mut pi, mut ti) = (0, 0);
        // Where to resume after the last `*`: pattern index after it, and
        // the text index it currently stands for.
        let mut backtrack: Option<(usize, usize)> = None;
        while ti < text.len() {
            match p.get(pi) {
                Some(b'*') => {
                    backtrack = Some((pi + 1, ti));
                    pi += 1;
                }
                Some(&c) if c == b'?' || c == text[ti] => {
                    pi += 1;
                    ti += 1;
                }
                _ => match backtrack {
                    // Let the last `*` swallow one more byte and try again.
                    Some((after_star, star_text)) => {
                        pi = after_star;
                        ti = star_text + 1;
                        backtrack = Some((after_star, star_text + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let m = |p: &str, t: &str| Glob::new(p).matches(t.as_bytes());
        assert!(m("python*", "python3"));
        assert!(m("python*", "python"));
        assert!(!m("python*", "ipython"));
        assert!(m("*train.py*", "python3 /home/a/train.py --epochs 3"));
        assert!(m("?ash", "bash"));
        assert!(!m("?ash", "ash"));
        assert!(m("*", ""));
        assert!(!m("a", ""));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
        assert!(m("*a*a*a*", "banana bread a"));
    }
}
