//! The inner encodings (listpack, ziplist, intset, zipmap) on arbitrary bytes, each iterated
//! to the end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdbferry::rdb::{intset, listpack, ziplist, zipmap};

fuzz_target!(|data: &[u8]| {
    if let Ok(it) = listpack::ListpackIter::new(data, 0) {
        let _ = it.declared_len();
        // The iterators stop after their first error, so `flatten` ends.
        for e in it.flatten() {
            let _ = e.to_bytes();
        }
    }
    if let Ok(it) = ziplist::ZiplistIter::new(data, 0) {
        let _ = it.declared_len();
        // The iterators stop after their first error, so `flatten` ends.
        for e in it.flatten() {
            let _ = e.to_bytes();
        }
    }
    if let Ok(it) = intset::IntsetIter::new(data, 0) {
        for e in it {
            if e.is_err() {
                break;
            }
        }
    }
    if let Ok(it) = zipmap::ZipmapIter::new(data, 0) {
        for e in it {
            if e.is_err() {
                break;
            }
        }
    }
});
