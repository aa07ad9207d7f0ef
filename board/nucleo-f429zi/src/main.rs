//! otkd on a NUCLEO-F429ZI: reads queries from the ST-LINK virtual COM port (USART3, PD8/PD9,
//! 115200 8N1), one per line, and answers each with the top-k document ids by CSLS and the
//! query's cycle count (DWT cycle counter at 168 MHz), e.g.
//!
//! ```text
//! > Mä anu ch'uxña quranak taypin jalaski
//! ids 412 97 803 5 661 cycles 4731342 (encode 4064210 + search 667132) = 28.162 ms
//! ```
//!
//! The firmware does not contain the blob: it finds it in its own flash region (`memory.x`'s
//! `BLOB`, 0x08020000), by the blob's header, bounded by the region; an erased region or a corrupt
//! blob is a `LoadError` printed on the serial port and over defmt (RTT), never a fault. Roles:
//! clocks and peripherals ([`main`]), the blob region ([`blob_region`]), static scratch memory
//! ([`ScratchMemory`]), one query ([`answer`]).
#![no_std]
#![no_main]

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m::peripheral::DWT;
use cortex_m_rt::entry;
use defmt_rtt as _;
use otkd_runtime::{Embedding, Feature, Index, Model, ModelConfig, Query, QueryTerms, Scoring, Scratch};
use panic_probe as _;
use stm32f4xx_hal::{block, pac, prelude::*, rcc, serial};

/// The core clock: the NUCLEO's 8 MHz HSE (the ST-LINK's MCO) through the PLL.
const SYSCLK_MHZ: u32 = 168;
/// Documents answered per query.
const K: usize = 5;
/// Bytes a query line may have.
const LINE: usize = 1024;
/// Words (windows included) a query may have, unless the blob's tokenizer keeps fewer.
const WORDS: usize = 32;

/// The largest model the static scratch memory is sized for: the `micro` preset (dim 192, 4 heads,
/// ffn 384, out 384, the default tokenizer). Smaller models run too.
const CAPACITY: ModelConfig = ModelConfig::MICRO;
const FEATURES_LEN: usize = Scratch::features_len(&CAPACITY, WORDS);
const FLOATS_LEN: usize = Scratch::floats_len(&CAPACITY, WORDS);
const INT8S_LEN: usize = Scratch::int8s_len(&CAPACITY, WORDS);

/// The encoder's working memory and a query's lexical terms (hybrid search), a `static` in
/// `.bss` (no heap, no stack).
struct ScratchMemory {
    features: heapless::Vec<Feature, FEATURES_LEN>,
    floats: [f32; FLOATS_LEN],
    int8s: [i8; INT8S_LEN],
    terms: QueryTerms,
}

static mut SCRATCH: ScratchMemory = ScratchMemory {
    features: heapless::Vec::new(),
    floats: [0.0; FLOATS_LEN],
    int8s: [0; INT8S_LEN],
    terms: QueryTerms::new(),
};
static SCRATCH_TAKEN: AtomicBool = AtomicBool::new(false);

impl ScratchMemory {
    /// The one static scratch memory; `None` after the first call.
    fn take() -> Option<&'static mut Self> {
        if SCRATCH_TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the flag above hands out this one `&mut` at most once.
        unsafe { (&raw mut SCRATCH).as_mut() }
    }

    /// Its buffers cut to what `words` words of a model of `config` need, and the query terms;
    /// `None` when that is more than this firmware has.
    fn scratch_for(&mut self, config: &ModelConfig, words: usize) -> Option<(Scratch<'_>, &mut QueryTerms)> {
        if Scratch::features_len(config, words) > FEATURES_LEN {
            return None;
        }
        self.features.clear();
        let floats = self.floats.get_mut(..Scratch::floats_len(config, words))?;
        let int8s = self.int8s.get_mut(..Scratch::int8s_len(config, words))?;
        Some((Scratch::new(self.features.as_mut_view(), floats, int8s), &mut self.terms))
    }
}

unsafe extern "C" {
    /// memory.x: the first byte of the blob region.
    static _otkd_blob_start: u8;
    /// memory.x: one past the blob region's last byte.
    static _otkd_blob_end: u8;
}

/// The blob region `memory.x` reserves: a blob is flashed there on its own, at its start.
fn blob_region() -> &'static [u8] {
    // Only the linker symbols' addresses are taken, never their contents.
    let start = (&raw const _otkd_blob_start).addr();
    let end = (&raw const _otkd_blob_end).addr();
    // SAFETY: memory.x reserves `[start, end)` of flash for the blob: no Rust object is placed
    // there and nothing writes the flash while the program runs. The pointer is made from the
    // address, as for MMIO.
    unsafe {
        core::slice::from_raw_parts(core::ptr::with_exposed_provenance(start), end.saturating_sub(start))
    }
}

type Tx = serial::Tx<pac::USART3>;

/// Stops here (after saying why), leaving the debugger attached: no fault, no reset loop.
fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

/// Microseconds of `cycles` at [`SYSCLK_MHZ`], as `(ms, thousandths)`.
fn millis(cycles: u32) -> (u32, u32) {
    let us = cycles / SYSCLK_MHZ;
    (us / 1000, us % 1000)
}

#[entry]
fn main() -> ! {
    let (Some(dp), Some(mut cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        defmt::error!("peripherals taken twice");
        halt()
    };
    let mut rcc = dp.RCC.freeze(rcc::Config::hse(8.MHz()).bypass_hse_oscillator().sysclk(SYSCLK_MHZ.MHz()));
    cp.DCB.enable_trace();
    cp.DWT.enable_cycle_counter();

    let gpiod = dp.GPIOD.split(&mut rcc);
    let config = serial::config::Config::default().baudrate(115_200.bps());
    let Ok(port) = dp.USART3.serial((gpiod.pd8, gpiod.pd9), config, &mut rcc) else {
        defmt::error!("USART3 refused 115200 baud");
        halt()
    };
    let (mut tx, mut rx) = port.split();
    let _ = write!(tx, "\r\notkd on NUCLEO-F429ZI, {} MHz\r\n", rcc.clocks.sysclk().to_MHz());

    let region = blob_region();
    let start = DWT::cycle_count();
    let model = match Model::from_bytes(otkd_runtime::blob::in_region(region)) {
        Ok(model) => model,
        Err(e) => {
            defmt::error!("load-error {}: no valid blob at {=usize:#010x}", e, region.as_ptr().addr());
            let _ = write!(
                tx,
                "load-error {e}\r\nno valid blob in the region at {:#010x} ({} bytes); flash one with\r\n  \
                 probe-rs download --chip STM32F429ZITx --binary-format bin --base-address {:#010x} model.otkd\r\n",
                region.as_ptr().addr(),
                region.len(),
                region.as_ptr().addr()
            );
            halt()
        }
    };
    let load = DWT::cycle_count().wrapping_sub(start);
    let config = *model.config();
    let words = WORDS.min(usize::from(config.tokenizer.max_words));
    let (Some(index), Some(memory)) = (model.index(), ScratchMemory::take()) else {
        defmt::error!("the blob has no document index");
        let _ = write!(tx, "the blob has no document index\r\n");
        halt()
    };
    if memory.scratch_for(&config, words).is_none() {
        defmt::error!("the blob's model needs more scratch memory than this firmware has");
        let _ = write!(tx, "the blob's model needs more scratch memory than this firmware has\r\n");
        halt()
    }
    let (ms, frac) = millis(load);
    defmt::info!("blob: {=usize} documents, checked in {=u32} cycles", index.len(), load);
    let _ = write!(
        tx,
        "blob: {} documents, dim {}, out {}; checked (CRC + every length) in {} cycles = {}.{:03} ms\r\n\
         type a query and Enter (queries of up to {} words; one at a time)\r\n> ",
        index.len(),
        config.dim,
        config.out_dim,
        load,
        ms,
        frac,
        words
    );

    let mut line = heapless::Vec::<u8, LINE>::new();
    let mut too_long = false;
    loop {
        let Ok(byte) = block!(rx.read()) else { continue }; // overrun or framing: drop the byte
        match byte {
            b'\r' | b'\n' => {
                let _ = write!(tx, "\r\n");
                if too_long {
                    let _ = write!(tx, "error: a line has at most {LINE} bytes\r\n");
                } else if !line.is_empty() {
                    answer(&mut tx, &model, index, memory, &config, words, &line);
                }
                line.clear();
                too_long = false;
                let _ = write!(tx, "> ");
            }
            _ => {
                too_long |= line.push(byte).is_err();
                let _ = block!(tx.write(byte)); // echo
            }
        }
    }
}

/// Answers one query line: the top [`K`] ids by CSLS and the cycles of encoding and search.
fn answer(
    tx: &mut Tx,
    model: &Model<'_>,
    index: Index<'_>,
    memory: &mut ScratchMemory,
    config: &ModelConfig,
    words: usize,
    line: &[u8],
) {
    let Ok(text) = core::str::from_utf8(line) else {
        let _ = write!(tx, "error: the line is not UTF-8\r\n");
        return;
    };
    let Some((mut scratch, terms)) = memory.scratch_for(config, words) else { return };
    let hybrid = index.lexical_weight().is_some();
    let start = DWT::cycle_count();
    // The embedding, written in place (not returned by value: no copies of its 1 KiB on the
    // stack), then (an index with a lexicon: hybrid search) the text's terms.
    let mut embedding = Embedding::new();
    let encoded = model
        .encode_into(text, &mut scratch, &mut embedding)
        .and_then(|()| if hybrid { model.terms(text, &mut scratch, terms) } else { Ok(()) });
    let encode = DWT::cycle_count().wrapping_sub(start);
    if let Err(e) = encoded {
        defmt::info!("encode-error {} cycles {=u32}", e, encode);
        let _ = write!(tx, "error {e} (encode {encode} cycles)\r\n");
        return;
    }
    let start = DWT::cycle_count();
    let hits = index.search::<K>(
        Query { embedding: &embedding, terms: hybrid.then_some(&*terms) },
        K,
        Scoring::Csls,
    );
    let search = DWT::cycle_count().wrapping_sub(start);
    let Ok(hits) = hits else {
        let _ = write!(tx, "error: the index is not the model's width\r\n");
        return;
    };
    let total = encode.wrapping_add(search);
    let (ms, frac) = millis(total);
    let _ = write!(tx, "ids");
    for hit in &hits {
        let _ = write!(tx, " {}", hit.id);
    }
    let _ = write!(tx, " cycles {total} (encode {encode} + search {search}) = {ms}.{frac:03} ms\r\n");
    let mut ids = [0u32; K];
    ids.iter_mut().zip(&hits).for_each(|(id, hit)| *id = hit.id);
    defmt::info!(
        "query: ids {=[?]} cycles {=u32} (encode {=u32} + search {=u32})",
        ids.get(..hits.len()).unwrap_or(&ids),
        total,
        encode,
        search
    );
}
