//! Writing and loading blobs: round trips, every kind of damage, and the micro student's sizes.

use otkd_runtime::testing::{MICRO, MINIMAL, OwnedScratch, SMALL, SplitMix64, seeded_index, seeded_parts};
use otkd_runtime::{BlobParts, FORMAT_VERSION, HEADER_LEN, LoadError, Model, Scratch, WriteError};

/// A blob small enough to damage byte by byte and bit by bit, with every part present.
fn tiny_blob() -> Vec<u8> {
    let mut parts = seeded_parts(MINIMAL, &mut SplitMix64::new(11));
    parts.index = Some(seeded_index(4, 3, &mut SplitMix64::new(12)));
    parts.to_bytes().unwrap()
}

#[test]
fn round_trip_keeps_config_index_and_quantized_weights() {
    let mut parts = seeded_parts(SMALL, &mut SplitMix64::new(5));
    parts.index = Some(seeded_index(48, 10, &mut SplitMix64::new(6)));
    let blob = parts.to_bytes().unwrap();
    assert_eq!(&blob[..4], b"OTKD");
    assert_eq!(u32::from_le_bytes(blob[4..8].try_into().unwrap()), FORMAT_VERSION);
    assert_eq!(u32::from_le_bytes(blob[8..12].try_into().unwrap()) as usize, blob.len() - HEADER_LEN);
    let model = Model::from_bytes(&blob).unwrap();
    assert_eq!(model.config(), &parts.config);
    let index = model.index().unwrap();
    assert_eq!(index.len(), 10);
    assert!(model.weight_bytes() + index.stored_bytes() < blob.len());
    // Writing is deterministic.
    assert_eq!(parts.to_bytes().unwrap(), blob);
}

#[test]
fn every_truncation_is_refused() {
    let blob = tiny_blob();
    assert!(Model::from_bytes(&blob).is_ok());
    for len in 0..blob.len() {
        let expected = if len < HEADER_LEN { LoadError::TooShort } else { LoadError::Truncated };
        assert_eq!(Model::from_bytes(&blob[..len]).err(), Some(expected), "length {len}");
    }
    let mut longer = blob.clone();
    longer.push(0);
    assert_eq!(Model::from_bytes(&longer).err(), Some(LoadError::TrailingBytes));
}

#[test]
fn every_single_bit_flip_is_refused() {
    let blob = tiny_blob();
    let mut flipped = blob.clone();
    for byte in 0..blob.len() {
        for bit in 0..8 {
            flipped[byte] ^= 1 << bit;
            let error = Model::from_bytes(&flipped).err();
            let at = format!("byte {byte} bit {bit}: {error:?}");
            match byte {
                0..4 => assert_eq!(error, Some(LoadError::BadMagic), "{at}"),
                4..8 => {
                    let found = FORMAT_VERSION ^ (1 << (8 * (byte - 4) + bit));
                    assert_eq!(
                        error,
                        Some(LoadError::UnsupportedVersion { found, supported: FORMAT_VERSION }),
                        "{at}"
                    );
                }
                // The payload is then shorter or longer than declared.
                8..12 => {
                    assert!(matches!(error, Some(LoadError::Truncated | LoadError::TrailingBytes)), "{at}")
                }
                // CRC-32 detects every single-bit error, in the payload or in the stored CRC.
                _ => assert_eq!(error, Some(LoadError::BadCrc), "{at}"),
            }
            flipped[byte] ^= 1 << bit;
        }
    }
}

#[test]
fn another_version_is_refused_by_name() {
    let mut blob = tiny_blob();
    blob[4..8].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let error = Model::from_bytes(&blob).unwrap_err();
    assert_eq!(error, LoadError::UnsupportedVersion { found: FORMAT_VERSION + 1, supported: FORMAT_VERSION });
    let message = error.to_string();
    assert!(message.contains(&format!("version {}", FORMAT_VERSION + 1)), "{message}");
    assert!(message.contains(&format!("version {FORMAT_VERSION}")), "{message}");
}

#[test]
fn a_huge_declared_length_is_refused() {
    let mut blob = tiny_blob();
    blob[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(Model::from_bytes(&blob).err(), Some(LoadError::Truncated));
}

#[test]
fn the_writer_refuses_bad_parts() {
    let config = SMALL;
    let good = seeded_parts(config, &mut SplitMix64::new(8));
    let refuse = |change: &dyn Fn(&mut BlobParts), expected: WriteError| {
        let mut parts = good.clone();
        change(&mut parts);
        assert_eq!(parts.to_bytes(), Err(expected));
    };
    refuse(&|p| p.config.heads = 0, WriteError::InvalidConfig);
    refuse(&|p| p.config.dim = 30, WriteError::InvalidConfig);
    refuse(&|p| p.config.layers = 1, WriteError::ShapeMismatch);
    refuse(&|p| p.embeddings.push(0.0), WriteError::ShapeMismatch);
    refuse(&|p| p.layers[1].ffn_in.bias.pop().map(drop).unwrap(), WriteError::ShapeMismatch);
    refuse(&|p| p.layers[0].ffn_norm.weight[3] = f32::NAN, WriteError::NonFinite);
    refuse(&|p| p.projection.weight[0] = f32::INFINITY, WriteError::NonFinite);
    refuse(&|p| p.positions[5] = 1e30, WriteError::ScaleOverflow);
    refuse(
        &|p| {
            p.index = Some(otkd_runtime::IndexParts {
                ids: vec![1],
                embeddings: vec![0.0; 47],
                hubness: vec![0.0],
                lexical: None,
            })
        },
        WriteError::ShapeMismatch,
    );
    refuse(
        &|p| {
            p.index = Some(otkd_runtime::IndexParts {
                ids: vec![1],
                embeddings: vec![0.0; 48],
                hubness: vec![],
                lexical: None,
            })
        },
        WriteError::ShapeMismatch,
    );
    refuse(
        &|p| {
            p.index = Some(otkd_runtime::IndexParts {
                ids: vec![1],
                embeddings: vec![0.0; 48],
                hubness: vec![f32::NAN],
                lexical: None,
            })
        },
        WriteError::NonFinite,
    );
}

/// The budgets of issue 8: a micro blob with a 1000-document index <= 2 MiB, and <= 64 KiB of
/// scratch for a 32-word query. Run with `--nocapture` to see the numbers.
#[test]
fn micro_blob_and_scratch_fit_their_budgets() {
    let config = MICRO;
    let mut parts = seeded_parts(config, &mut SplitMix64::new(9));
    parts.index = Some(seeded_index(384, 1000, &mut SplitMix64::new(10)));
    let blob = parts.to_bytes().unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    let (weights, index) = (model.weight_bytes(), model.index().unwrap().stored_bytes());
    let scratch = Scratch::ram_bytes(&config, 32);
    println!(
        "micro blob: weights {weights} B, index {index} B (1000 docs), total {} B; scratch for 32 words: \
         {scratch} B (features {} x 8, floats {} x 4, int8s {})",
        blob.len(),
        Scratch::features_len(&config, 32),
        Scratch::floats_len(&config, 32),
        Scratch::int8s_len(&config, 32)
    );
    assert!(blob.len() <= 2 * 1024 * 1024, "blob {} B", blob.len());
    assert!(scratch <= 64 * 1024, "scratch {scratch} B");
    // The scratch really is enough for a 32-word query of long words.
    let text = ["Allinllachu", "Imaynallam", "kachkanki"].repeat(11)[..32].join(" ");
    let mut owned = OwnedScratch::new(&config, 32);
    assert!(model.encode(&text, &mut owned.scratch()).is_ok());
}
