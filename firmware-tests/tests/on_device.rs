//! On-device tests (defmt-test): the runtime on the Cortex-M4F, with the blob found in its own
//! flash region (placed there by QEMU's loader), gives the host runtime's answers (the golden
//! table `build.rs` computed, bit for bit) and reports bad input as values.
#![no_std]
#![no_main]

use cortex_m_rt as _;
use otkd_firmware as _;

use otkd_firmware::{EXPECTED, Expected, K, QUERIES, ScratchMemory};
use otkd_runtime::{Model, Query, QueryTerms, Scoring};

/// What `init` makes: the blob loaded in place from its region and the static scratch memory.
pub struct State {
    model: Model<'static>,
    blob: &'static [u8],
    memory: &'static mut ScratchMemory,
    terms: &'static mut QueryTerms,
}

/// Every query: the same outcome, ids and score bits as the host runtime, for both scorings.
fn check(state: &mut State, scoring: Scoring) {
    let Some(index) = state.model.index() else { defmt::panic!("no index") };
    defmt::assert_eq!(QUERIES.len(), EXPECTED.len());
    for (i, (text, expected)) in QUERIES.iter().zip(EXPECTED).enumerate() {
        let Some(mut scratch) = state.memory.scratch_for(state.model.config()) else {
            defmt::panic!("the blob does not fit the scratch memory")
        };
        let (model, terms) = (&state.model, &mut *state.terms);
        let hybrid = index.lexical_weight().is_some();
        let encoded = model.encode(text, &mut scratch).and_then(|embedding| {
            if hybrid {
                model.terms(text, &mut scratch, terms)?;
            }
            Ok(embedding)
        });
        match (encoded, expected) {
            (Ok(embedding), Expected::Hits { cosine, csls }) => {
                let query = Query { embedding: &embedding, terms: hybrid.then_some(&*terms) };
                let hits = match index.search::<K>(query, K, scoring) {
                    Ok(hits) => hits,
                    Err(e) => defmt::panic!("query {}: {}", i, e),
                };
                let want = if scoring == Scoring::Cosine { cosine } else { csls };
                defmt::assert_eq!(hits.len(), want.len(), "query {}", i);
                for (hit, &(id, bits)) in hits.iter().zip(want.iter()) {
                    defmt::assert_eq!((hit.id, hit.score.to_bits()), (id, bits), "query {}", i);
                }
            }
            (Err(got), Expected::Encode(want)) => defmt::assert_eq!(got, *want, "query {}", i),
            (Ok(_), Expected::Encode(want)) => defmt::panic!("query {}: encoded, host: {}", i, want),
            (Err(got), Expected::Hits { .. }) => defmt::panic!("query {}: {}, host encoded it", i, got),
        }
    }
}

#[defmt_test::tests]
mod tests {
    use super::{State, check};
    use otkd_firmware::{BLOB_CRC, BLOB_LEN, ScratchMemory};
    use otkd_runtime::{EncodeError, Feature, LoadError, Model, Scoring, Scratch, crc32};

    #[init]
    fn init() -> State {
        let (model, blob) = match otkd_firmware::load() {
            Ok(loaded) => loaded,
            Err(e) => defmt::panic!("the blob region holds no loadable blob: {}", e),
        };
        let Some(memory) = ScratchMemory::take() else { defmt::panic!("scratch memory taken twice") };
        let Some(terms) = otkd_firmware::take_query_terms() else { defmt::panic!("query terms taken twice") };
        State { model, blob, memory, terms }
    }

    #[test]
    fn region_holds_the_blob_the_golden_answers_are_for(state: &mut State) {
        defmt::assert_eq!((state.blob.len(), crc32(state.blob)), (BLOB_LEN, BLOB_CRC));
        defmt::assert!(state.blob.len() < otkd_firmware::blob_region().len());
        defmt::assert!(state.model.index().is_some_and(|index| !index.is_empty()));
        let config = *state.model.config();
        defmt::assert!(state.memory.scratch_for(&config).is_some());
    }

    #[test]
    fn every_query_ranks_as_on_the_host_by_cosine(state: &mut State) {
        check(state, Scoring::Cosine);
    }

    #[test]
    fn every_query_ranks_as_on_the_host_by_csls(state: &mut State) {
        check(state, Scoring::Csls);
    }

    /// The assembly kernels (several words per pass, four rows per pass) against a scalar loop,
    /// for every word count, row remainder and width around their block sizes: the host tests
    /// only have the scalar path.
    #[test]
    fn int8_kernels_match_the_scalar_reference() {
        defmt::assert_eq!(Model::int8_kernel_mismatch(), None);
    }

    #[test]
    fn text_without_a_word_is_an_empty_query(state: &mut State) {
        let config = *state.model.config();
        let Some(mut scratch) = state.memory.scratch_for(&config) else { defmt::panic!("no scratch") };
        defmt::assert_eq!(state.model.encode(" ¿?!… — ", &mut scratch).err(), Some(EncodeError::EmptyQuery));
    }

    #[test]
    fn too_small_scratch_is_reported(state: &mut State) {
        let mut features = heapless::Vec::<Feature, 8>::new();
        let (mut floats, mut int8s) = ([0f32; 16], [0i8; 16]);
        let mut scratch = Scratch::new(features.as_mut_view(), &mut floats, &mut int8s);
        defmt::assert_eq!(
            state.model.encode("Jaʼa, qhana!", &mut scratch).err(),
            Some(EncodeError::ScratchTooSmall)
        );
    }

    #[test]
    fn cut_blobs_are_refused(state: &mut State) {
        let blob = state.blob;
        defmt::assert_eq!(Model::from_bytes(&blob[..blob.len() - 1]).err(), Some(LoadError::Truncated));
        defmt::assert_eq!(Model::from_bytes(&blob[..8]).err(), Some(LoadError::TooShort));
        // The region past the blob: the header bounds it, so trailing flash is never read as blob.
        let region = otkd_firmware::blob_region();
        defmt::assert_eq!(Model::from_bytes(&region[..blob.len() + 1]).err(), Some(LoadError::TrailingBytes));
        let mut header = [0u8; 16];
        header.copy_from_slice(&blob[..16]);
        header[0] ^= 0x20;
        defmt::assert_eq!(Model::from_bytes(&header).err(), Some(LoadError::BadMagic));
    }
}
