//! The request classifier allocates nothing: it reads through a fixed stack buffer.

use llmroute_router::{RequestType, classify_request};

mod counting;

use counting::allocations;

#[test]
fn classifying_allocates_nothing() {
    let system = "You are a helpful assistant. ".repeat(200);
    let user = format!("Write a Python function that parses dates. {}", "More context here. ".repeat(500));
    let before = allocations();
    let mut kinds = [0usize; 7];
    for _ in 0..100 {
        kinds[std::hint::black_box(classify_request(&system, &user)).index()] += 1;
    }
    assert_eq!(allocations() - before, 0, "the classifier allocated");
    assert_eq!(kinds[RequestType::CodeGeneration.index()], 100);
}
