//! Implicit feedback from a session's next turn (adaptive groups): the user asking the same
//! question again, or saying the answer was wrong, is a failure of the answer before. Pure and
//! bounded: each text is read up to [`crate::CLASSIFY_MAX_CHARS`] characters.

use std::collections::HashSet;

/// Jaccard similarity of word sets at or above which a turn repeats the previous one.
pub const REPETITION: f64 = 0.8;

/// Phrases by which a user says the previous answer failed (lowercase).
const CORRECTIONS: [&str; 16] = [
    "that's wrong",
    "that is wrong",
    "thats wrong",
    "that's not right",
    "that is not right",
    "that's incorrect",
    "that is incorrect",
    "not what i asked",
    "you misunderstood",
    "doesn't work",
    "does not work",
    "didn't work",
    "try again",
    "wrong answer",
    "still wrong",
    "that's not what i",
];

fn words(text: &str) -> HashSet<String> {
    text.chars()
        .take(crate::CLASSIFY_MAX_CHARS)
        .collect::<String>()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Jaccard similarity of the word sets of `a` and `b` (0 when both are empty).
pub fn jaccard(a: &str, b: &str) -> f64 {
    let (a, b) = (words(a), words(b));
    let union = a.union(&b).count();
    if union == 0 { 0.0 } else { a.intersection(&b).count() as f64 / union as f64 }
}

/// Whether `text` says the previous answer was wrong or unhelpful.
pub fn is_correction(text: &str) -> bool {
    let head: String = text.chars().take(crate::CLASSIFY_MAX_CHARS).collect::<String>().to_lowercase();
    let head = head.replace('\u{2019}', "'");
    CORRECTIONS.iter().any(|p| head.contains(p))
}

/// Whether the turn `current` says the answer to `previous` failed: a repetition of the same
/// question or a correction.
pub fn failed_previous(previous: &str, current: &str) -> bool {
    is_correction(current) || (!current.trim().is_empty() && jaccard(previous, current) >= REPETITION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_and_corrections_are_failures_and_follow_ups_are_not() {
        assert!(failed_previous("How do I sort a list in Python?", "how do I sort a list in python"));
        assert!(failed_previous("Sort a list", "No, that's wrong. Sort it descending."));
        assert!(failed_previous("x", "That\u{2019}s not what I asked"));
        assert!(!failed_previous("How do I sort a list in Python?", "Thanks! And how do I reverse it?"));
        assert!(!failed_previous("", ""), "empty turns say nothing");
        assert_eq!(jaccard("", ""), 0.0);
        assert!((jaccard("a b", "b c") - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn huge_and_odd_texts_are_bounded() {
        let huge = "word ".repeat(1_000_000);
        assert!(failed_previous(&huge, &huge));
        assert!(!is_correction("\u{0}\u{ffff}"));
    }
}
