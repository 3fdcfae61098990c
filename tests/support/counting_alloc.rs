//! A global allocator that counts heap allocations per thread (the test harness runs tests
//! on several threads; a test reads only its own thread's count). Forwards to `System`.
//! Shared by the integration-test binaries that prove a path allocates nothing
//! (`#[path = ...] mod counting_alloc;`).
#![allow(unsafe_code)]

struct CountingAlloc;

thread_local! {
    static THREAD_ALLOCS: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    static THREAD_LARGEST: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

fn count_alloc(size: usize) {
    // `try_with`: never panic inside the allocator (e.g. during TLS teardown).
    let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = THREAD_LARGEST.try_with(|c| c.set(c.get().max(size)));
}

/// Largest single allocation (bytes) on the calling thread since the last call; resets it.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn take_largest_alloc() -> usize {
    THREAD_LARGEST.with(|c| c.replace(0))
}

/// Heap allocations (alloc, alloc_zeroed, realloc) made so far on the calling thread.
pub fn thread_allocs() -> usize {
    THREAD_ALLOCS.with(core::cell::Cell::get)
}

/// Panics unless the counter sees an allocation made on this thread.
pub fn assert_counting() {
    let before = thread_allocs();
    let probe = std::hint::black_box(vec![1u8; 64]);
    assert!(
        thread_allocs() > before,
        "allocation counter does not count"
    );
    drop(probe);
}

// SAFETY: every method forwards unchanged to the system allocator; the only
// addition is a thread-local counter increment, which does not allocate.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_alloc(layout.size());
        // SAFETY: forwarded unchanged (caller upholds `alloc`'s contract).
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_alloc(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        count_alloc(new);
        // SAFETY: forwarded unchanged.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static COUNTING_ALLOC: CountingAlloc = CountingAlloc;
