//! The request classifier allocates nothing: it reads through a fixed stack buffer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use llmroute_router::{RequestType, classify_request};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn classifying_allocates_nothing() {
    let system = "You are a helpful assistant. ".repeat(200);
    let user = format!("Write a Python function that parses dates. {}", "More context here. ".repeat(500));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut kinds = [0usize; 7];
    for _ in 0..100 {
        kinds[std::hint::black_box(classify_request(&system, &user)).index()] += 1;
    }
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed) - before, 0, "the classifier allocated");
    assert_eq!(kinds[RequestType::CodeGeneration.index()], 100);
}
