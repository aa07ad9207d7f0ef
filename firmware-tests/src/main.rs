//! The query program: finds the blob in its flash region (`memory.x`'s `BLOB`; the firmware does
//! not contain it), loads it in place, answers every embedded query by cosine and by CSLS, and
//! prints (defmt) one machine-readable line per outcome, each starting with `@`:
//!
//! ```text
//! @calib instructions 2097152 ticks 52429
//! @blob 0x00100000 bytes 31234 load-ticks 1234
//! @q 0 cosine ids [1003, ...] bits [1056964608, ...] encode-ticks 812 search-ticks 95
//! @q 0 csls ids [...] bits [...] encode-ticks 812 search-ticks 97
//! @q 17 encode-error EmptyQuery encode-ticks 12
//! @stack used 2312 of 4161536
//! @done queries 20
//! ```
//!
//! Scores are `f32::to_bits`, so the host compares them bit for bit. A refused blob (an erased
//! region: `BadMagic`; a corrupt one: `BadCrc`, ...) prints `@load-error NAME` and exits with
//! `code::LOAD_ERROR`; a blob that needs more scratch memory than this firmware has, or has no
//! index, `@wrong-blob` and `code::WRONG_BLOB`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use otkd_firmware::{K, QUERIES, ScratchMemory, Ticks, code, exit};
use otkd_runtime::{Embedding, Query, Scoring};

#[entry]
fn main() -> ! {
    otkd_firmware::paint_stack();
    let Some(peripherals) = cortex_m::Peripherals::take() else { exit(code::PANIC) };
    let ticks = Ticks::start(peripherals.SYST);
    let (instructions, calibration) = ticks.calibrate();
    defmt::info!("@calib instructions {=u32} ticks {=u32}", instructions, calibration);

    let region = otkd_firmware::blob_region();
    let start = ticks.now();
    let (model, blob) = match otkd_firmware::load() {
        Ok(loaded) => loaded,
        Err(e) => {
            defmt::error!("@load-error {}", e);
            defmt::error!(
                "no valid blob in the region at {=usize:#010x} ({=usize} bytes); flash one there on its own",
                region.as_ptr().addr(),
                region.len()
            );
            exit(code::LOAD_ERROR)
        }
    };
    let load = ticks.since(start);
    defmt::info!(
        "@blob {=usize:#010x} bytes {=usize} load-ticks {=u32}",
        blob.as_ptr().addr(),
        blob.len(),
        load
    );
    let Some(index) = model.index() else {
        defmt::error!("@wrong-blob the blob has no document index");
        exit(code::WRONG_BLOB)
    };
    let Some(memory) = ScratchMemory::take() else { exit(code::PANIC) };
    let Some(terms) = otkd_firmware::take_query_terms() else { exit(code::PANIC) };
    let hybrid = index.lexical_weight().is_some();
    if memory.scratch_for(model.config()).is_none() {
        defmt::error!(
            "@wrong-blob its model needs more scratch memory than this firmware has (sized for otkd_firmware::CAPACITY)"
        );
        exit(code::WRONG_BLOB)
    }

    // One embedding for every query, written in place (not returned by value: no copies of its
    // 1 KiB on the stack).
    let mut embedding = Embedding::new();
    for (i, text) in QUERIES.iter().enumerate() {
        let Some(mut scratch) = memory.scratch_for(model.config()) else { exit(code::WRONG_BLOB) };
        let start = ticks.now();
        // The embedding, then (an index with a lexicon: hybrid search) the text's terms.
        let encoded = model
            .encode_into(text, &mut scratch, &mut embedding)
            .and_then(|()| if hybrid { model.terms(text, &mut scratch, terms) } else { Ok(()) });
        let encode = ticks.since(start);
        if let Err(e) = encoded {
            defmt::info!("@q {=usize} encode-error {} encode-ticks {=u32}", i, e, encode);
            continue;
        }
        let query = Query { embedding: &embedding, terms: hybrid.then_some(&*terms) };
        for (name, scoring) in [("cosine", Scoring::Cosine), ("csls", Scoring::Csls)] {
            let start = ticks.now();
            let hits = match index.search::<K>(query, K, scoring) {
                Ok(hits) => hits,
                Err(e) => {
                    defmt::error!("@q {=usize} search-error {}", i, e);
                    exit(code::WRONG_BLOB)
                }
            };
            let search = ticks.since(start);
            let mut ids = [0u32; K];
            let mut bits = [0u32; K];
            for ((id, bit), hit) in ids.iter_mut().zip(bits.iter_mut()).zip(&hits) {
                *id = hit.id;
                *bit = hit.score.to_bits();
            }
            defmt::info!(
                "@q {=usize} {=str} ids {=[?]} bits {=[?]} encode-ticks {=u32} search-ticks {=u32}",
                i,
                name,
                &ids[..hits.len()],
                &bits[..hits.len()],
                encode,
                search
            );
        }
    }

    let (used, size) = otkd_firmware::stack_high_water();
    defmt::info!("@stack used {=usize} of {=usize}", used, size);
    defmt::info!("@done queries {=usize}", QUERIES.len());
    exit(code::OK)
}
