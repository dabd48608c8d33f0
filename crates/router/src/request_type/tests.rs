use super::*;

fn kind(user: &str) -> RequestType {
    classify_request("", user)
}

#[test]
fn every_type_has_cases() {
    let cases = [
        ("Write a Python function that parses ISO dates and returns a datetime", RequestType::CodeGeneration),
        ("Implement a rust struct with a builder and unit tests", RequestType::CodeGeneration),
        ("Can you generate a SQL query joining orders and customers?", RequestType::CodeGeneration),
        (
            "Explain what this does:\n```\nfn main() { let x = vec![1]; println!(\"{x:?}\"); }\n```",
            RequestType::CodeUnderstanding,
        ),
        ("Why does this crash with a segfault? int *p = 0; *p = 1;", RequestType::CodeUnderstanding),
        (
            "Debug this error: Traceback ... KeyError: 'id' in def load(): return d['id']",
            RequestType::CodeUnderstanding,
        ),
        (
            "Design a scalable architecture for a distributed rate limiter with sharding and replication",
            RequestType::TechnicalDesign,
        ),
        (
            "What are the tradeoffs of microservices versus a monolith for our infrastructure?",
            RequestType::TechnicalDesign,
        ),
        (
            "Compare the two offers and evaluate the pros and cons; calculate the break-even",
            RequestType::AnalyticalReasoning,
        ),
        (
            "Prove that the sum of two even numbers is even, and derive the general equation",
            RequestType::AnalyticalReasoning,
        ),
        ("Draft a friendly email to the team announcing the offsite", RequestType::Writing),
        ("Rewrite this paragraph in a more formal tone and summarize it as a headline", RequestType::Writing),
        ("What is the capital of Australia?", RequestType::FactualLookup),
        ("Who wrote Middlemarch?", RequestType::FactualLookup),
        ("hello there", RequestType::General),
        ("thanks!", RequestType::General),
    ];
    for (text, expected) in cases {
        assert_eq!(kind(text), expected, "{text:?}");
    }
    // Every type is reachable.
    let seen: std::collections::BTreeSet<RequestType> = cases.iter().map(|(t, _)| kind(t)).collect();
    assert_eq!(seen.len(), RequestType::ALL.len());
}

#[test]
fn the_system_prompt_leans_but_the_user_decides() {
    let coder = "You are a senior Rust engineer. Write code with tests.";
    assert_eq!(classify_request(coder, "a function that reverses a string"), RequestType::CodeGeneration);
    assert_eq!(classify_request(coder, "Draft a short email declining the meeting"), RequestType::Writing);
}

#[test]
fn inputs_that_must_not_crash_it() {
    assert_eq!(kind(""), RequestType::General);
    assert_eq!(classify_request("", "\u{0}\u{1}\u{7f}"), RequestType::General);
    let huge = "word ".repeat(1_000_000);
    assert_eq!(kind(&huge), RequestType::General);
    let long_word = "x".repeat(100_000);
    assert_eq!(kind(&long_word), RequestType::General);
    let emoji = "🙂".repeat(10_000);
    assert_eq!(kind(&emoji), RequestType::General);
    let mixed = "ＷＲＩＴＥ ａ ｐｏｅｍ ´´´ ``` ;;; {{{";
    let _ = kind(mixed);
    // Only the first 2,000 characters count: a keyword after them is not read.
    let late = format!("{} Draft an essay", "filler ".repeat(400));
    assert_eq!(kind(&late), RequestType::General);
}

#[test]
fn names_are_the_seed_taxonomy() {
    let names: Vec<&str> = RequestType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(
        names,
        [
            "code_generation",
            "code_understanding",
            "technical_design",
            "analytical_reasoning",
            "writing",
            "factual_lookup",
            "general"
        ]
    );
    for (i, t) in RequestType::ALL.iter().enumerate() {
        assert_eq!(t.index(), i);
    }
}
