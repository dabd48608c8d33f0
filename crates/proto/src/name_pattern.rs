//! Public model names: exact, or a pattern with one `*` that matches any (possibly empty) run.

/// A parsed public name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamePattern<'a> {
    /// Matches only itself.
    Exact(&'a str),
    /// `prefix*suffix`.
    Wildcard {
        /// Literal part before `*`.
        prefix: &'a str,
        /// Literal part after `*`.
        suffix: &'a str,
    },
}

impl<'a> NamePattern<'a> {
    /// Parses a name; the first `*` splits it (schemas allow at most one).
    pub fn parse(name: &'a str) -> Self {
        match name.split_once('*') {
            Some((prefix, suffix)) => Self::Wildcard { prefix, suffix },
            None => Self::Exact(name),
        }
    }

    /// Length of the literal part: among matching patterns the longest wins.
    pub fn literal_len(&self) -> usize {
        match self {
            Self::Exact(name) => name.len(),
            Self::Wildcard { prefix, suffix } => prefix.len() + suffix.len(),
        }
    }

    /// The part of `requested` the `*` matched (`""` for an exact match), or `None`.
    pub fn capture<'r>(&self, requested: &'r str) -> Option<&'r str> {
        match self {
            Self::Exact(name) => (*name == requested).then_some(""),
            Self::Wildcard { prefix, suffix } => {
                let rest = requested.strip_prefix(prefix)?;
                rest.strip_suffix(suffix)
            }
        }
    }

    /// Whether `requested` matches.
    pub fn matches(&self, requested: &str) -> bool {
        self.capture(requested).is_some()
    }
}

/// Substitutes `capture` for the `*` of an upstream model template (no `*`: unchanged).
pub fn substitute(template: &str, capture: &str) -> String {
    match template.split_once('*') {
        Some((before, after)) => format!("{before}{capture}{after}"),
        None => template.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_matches_only_itself() {
        let p = NamePattern::parse("gpt-4o");
        assert_eq!(p.capture("gpt-4o"), Some(""));
        assert!(!p.matches("gpt-4o-mini"));
    }

    #[test]
    fn wildcard_captures_the_middle() {
        let p = NamePattern::parse("openai/*");
        assert_eq!(p.capture("openai/gpt-4o"), Some("gpt-4o"));
        assert_eq!(p.capture("openai/"), Some(""));
        assert!(!p.matches("azure/gpt-4o"));
        let p = NamePattern::parse("a*z");
        assert_eq!(p.capture("abcz"), Some("bc"));
        assert!(!p.matches("az-"));
        assert_eq!(p.literal_len(), 2);
        assert!(NamePattern::parse("*").matches("anything"));
    }

    #[test]
    fn prefix_and_suffix_never_overlap() {
        assert!(!NamePattern::parse("ab*ba").matches("aba"));
    }

    #[test]
    fn substitute_replaces_the_star() {
        assert_eq!(substitute("vendor-*-v1", "x"), "vendor-x-v1");
        assert_eq!(substitute("fixed", "x"), "fixed");
    }
}
