//! `Model::encode` and `Index::search` of a fixed small model on arbitrary text: the input as lossy
//! UTF-8, and an arbitrary `&str` drawn from it.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use otkd_runtime::Model;

#[path = "common.rs"]
mod common;

static BLOB: LazyLock<Vec<u8>> = LazyLock::new(common::small_model);

fuzz_target!(|data: &[u8]| {
    let model = Model::from_bytes(&BLOB).expect("the fixed model loads");
    common::exercise(&model, &String::from_utf8_lossy(data));
    if let Ok(text) = <&str>::arbitrary(&mut Unstructured::new(data)) {
        common::exercise(&model, text);
    }
});
