//! The process's allocator: mimalloc for small objects, the system's for large buffers.
//!
//! A request allocates and frees many small objects (headers, paths, futures) from several
//! threads; glibc's malloc spent a fifth of a manifest hit's time on them, mimalloc far less.
//! Large buffers (blob chunks, file reads) are another matter: they are often made on one
//! thread and freed on another, and mimalloc keeps their pages with the thread that made them,
//! so 16 clients of a large blob held over 100 MiB; glibc maps a large buffer on its own and
//! gives it back on free. So each allocation goes by its size: under [`LARGE`] to mimalloc,
//! from [`LARGE`] up to the system allocator. A block is always freed by the allocator that
//! made it, since Rust frees with the layout it allocated with.
//!
//! mimalloc is built without transparent huge pages (`no_thp`, set on `libmimalloc-sys` in
//! Cargo.toml): with them, an idle acr held 20 MiB instead of 13.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Allocations of this size and more go to the system allocator.
pub const LARGE: usize = 8 * 1024;

/// See the module documentation.
pub struct SplitAllocator;

// SAFETY: every block is allocated and freed by the same allocator, chosen by the layout's
// size, which Rust passes unchanged from allocation to free; a `realloc` that crosses the
// boundary allocates in the other allocator, copies, and frees in the first.
unsafe impl GlobalAlloc for SplitAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= LARGE {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (layout.size() >= LARGE, new_size >= LARGE) {
            (false, false) => unsafe { MiMalloc.realloc(ptr, layout, new_size) },
            (true, true) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: the caller guarantees `new_size`, rounded to the alignment, fits.
                let new_layout =
                    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_grow_and_shrink_across_the_boundary_with_their_bytes() {
        let a = SplitAllocator;
        let small = Layout::from_size_align(1000, 8).unwrap();
        unsafe {
            let p = a.alloc(small);
            assert!(!p.is_null());
            for i in 0..1000 {
                *p.add(i) = (i % 251) as u8;
            }
            // Small to large (system), then large to larger, then back to small (mimalloc).
            let big = a.realloc(p, small, LARGE * 2);
            assert!(!big.is_null());
            let bigger = a.realloc(
                big,
                Layout::from_size_align(LARGE * 2, 8).unwrap(),
                LARGE * 4,
            );
            let back = a.realloc(bigger, Layout::from_size_align(LARGE * 4, 8).unwrap(), 500);
            for i in 0..500 {
                assert_eq!(*back.add(i), (i % 251) as u8);
            }
            a.dealloc(back, Layout::from_size_align(500, 8).unwrap());
            let z = a.alloc_zeroed(Layout::from_size_align(LARGE, 4096).unwrap());
            assert_eq!(z as usize % 4096, 0);
            assert!((0..LARGE).all(|i| *z.add(i) == 0));
            a.dealloc(z, Layout::from_size_align(LARGE, 4096).unwrap());
        }
    }
}
