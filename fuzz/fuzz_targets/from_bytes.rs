//! `Model::from_bytes` on arbitrary bytes, three ways: as a whole blob; as a payload behind a valid
//! header and CRC (so that decoding and validation, not only the CRC, see it); and as byte edits
//! to a valid payload (so that most inputs are nearly valid). A model that loads is then used:
//! encode and search must not panic either.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use otkd_runtime::{HEADER_LEN, Model, testing};

#[path = "common.rs"]
mod common;

static TINY_PAYLOAD: LazyLock<Vec<u8>> = LazyLock::new(|| common::tiny_model()[HEADER_LEN..].to_vec());

fn load_and_use(blob: &[u8]) {
    if let Ok(model) = Model::from_bytes(blob) {
        for text in ["a dog runs", "Jaʼa, qhana!", "", "一只狗 ñandu"] {
            common::exercise(&model, text);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    load_and_use(data);
    load_and_use(&testing::seal(data));
    // Edits: each 3 bytes set the byte at a 16-bit offset (modulo the length); a last lone byte
    // truncates the payload to that many bytes from the end.
    let mut payload = TINY_PAYLOAD.clone();
    let edits = data.chunks_exact(3);
    if let [cut] = edits.remainder() {
        payload.truncate(payload.len().saturating_sub(usize::from(*cut)));
    }
    let len = payload.len();
    for edit in edits {
        if let Some(byte) = payload.get_mut(usize::from(u16::from_le_bytes([edit[0], edit[1]])) % len.max(1))
        {
            *byte = edit[2];
        }
    }
    load_and_use(&testing::seal(&payload));
});
