//! Memory bounds: parsing never copies the body, and a large body is streamed with
//! bounded memory. Measured with a counting global allocator, so this file holds a single
//! test (parallel tests would pollute the count).

// A global allocator has to be an `unsafe impl`; it only forwards to `System` and counts.
#![allow(unsafe_code)]

use gpuwarden_collect::prom::{self, Limits, ParseError};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with the same layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated on top of what was live when `f` started.
fn extra_peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - base)
}

#[test]
fn parsing_allocates_nothing_proportional_to_the_body() {
    // 100 MB over the limit: refused without copying a byte.
    let huge = vec![b'x'; 100 * 1024 * 1024];
    let (err, peak) = extra_peak(|| prom::parse(&huge, &Limits::default(), |_| {}));
    assert!(matches!(err, Err(ParseError::BodyTooLarge { .. })));
    assert!(peak < 4096, "refusing a 100 MB body allocated {peak} bytes");
    drop(huge);

    // A valid 8 MB page within the limit is streamed: memory does not grow with it.
    let line = "DCGM_FI_DEV_GPU_TEMP{gpu=\"0\",UUID=\"GPU-20c56d28-0da5-6d26-a36a-e7af1ce2586e\",device=\"nvidia0\",modelName=\"Tesla T4\",Hostname=\"h\"} 25\n";
    let mut page = String::from("# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n");
    while page.len() < 8 * 1024 * 1024 {
        page.push_str(line);
    }
    let (summary, peak) = extra_peak(|| {
        let mut n = 0usize;
        prom::parse(page.as_bytes(), &Limits::default(), |s| n += s.labels.len()).map(|s| (s, n))
    });
    let (summary, labels) = summary.expect("valid page");
    assert!(summary.samples > 50_000);
    assert_eq!(labels, summary.samples * 5);
    assert!(peak < 64 * 1024, "parsing an 8 MB page allocated {peak} bytes at peak");
}
